"""Telegram route: `POST /api/telegram/webhook` receives updates in webhook mode."""
from .routes import blp

__all__ = ["blp"]
