"""DAARION City backend: rooms, presence, the city feed, Second Me and a Matrix bridge."""

__version__ = "0.1.0"
