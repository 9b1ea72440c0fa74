"""Cron job routes: CRUD, runs and run-now.  Users manage their own jobs; admins see all."""
from .routes import blp

__all__ = ["blp"]
