"""`GET /ws`: chat streaming over WebSocket (flask-sock), see routes.py and connection.py."""
from .routes import blp, init_app

__all__ = ["blp", "init_app"]
