"""Chat route: `POST /api/chat` runs one agent turn and answers with the final reply."""
from .routes import blp

__all__ = ["blp"]
