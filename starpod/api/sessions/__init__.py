"""Session routes: list, get, messages and read state.  Non-admins only ever see their own."""
from .routes import blp

__all__ = ["blp"]
