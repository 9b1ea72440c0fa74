"""The agent: LLM providers, the tool loop, tools, the system prompt and the chat pipeline.

Nothing in this package imports Flask; `pipeline.run_chat` is the one entry point used by REST,
the WebSocket, the scheduler and the Telegram channel.
"""
