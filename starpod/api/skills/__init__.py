"""Skills, admin only: `/api/settings/skills` CRUD and `/api/settings/skills/generate`."""
from .routes import blp

__all__ = ["blp"]
