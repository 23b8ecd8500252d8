"""One module per command; each exposes ``register(app)`` and is listed in ``cli.py``."""
