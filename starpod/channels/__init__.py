"""Messaging channels that reach the agent from outside the HTTP API (Telegram)."""
