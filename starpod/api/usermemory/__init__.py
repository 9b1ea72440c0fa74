"""Per-user memory files, admin only: `/api/settings/users[/<id>]`."""
from .routes import blp

__all__ = ["blp"]
