"""Memory routes: full-text search over the caller's memory and an on-demand reindex."""
from .routes import blp

__all__ = ["blp"]
