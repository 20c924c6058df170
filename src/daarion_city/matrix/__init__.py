"""The Matrix gateway: city presence mirrored to a homeserver as an application service."""
