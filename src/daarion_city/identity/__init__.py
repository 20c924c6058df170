"""Who is calling: the principal, the tokens that prove it and the routes that issue them.

Identity always comes from a verified token, never from a body or a frame."""
