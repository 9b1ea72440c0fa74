"""Auth routes: key verification and admin management of users, API keys and Telegram links."""
from .routes import blp

__all__ = ["blp"]
