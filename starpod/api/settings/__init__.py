"""Admin settings routes: agent.toml groups, frontend.toml, agent files and the model catalogue."""
from .routes import blp

__all__ = ["blp"]
