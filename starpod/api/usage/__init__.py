"""Token and cost usage per day: `GET /api/usage`."""
from .routes import blp

__all__ = ["blp"]
