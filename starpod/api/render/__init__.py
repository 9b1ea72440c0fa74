"""Markdown rendering for the web UI: `POST /api/render`."""
from .routes import blp

__all__ = ["blp"]
