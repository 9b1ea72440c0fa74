"""Instance routes: list, create, inspect, pause, restart and stop other Starpod agents."""
from .routes import blp

__all__ = ["blp"]
