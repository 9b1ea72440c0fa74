"""Token prices (USD per million tokens) per provider and model, and the cost of one model call.

Cache-read and cache-write tokens are counted but not priced (spec §6.5).
"""
from __future__ import annotations

OPENAI_COMPATIBLE = ("openai", "groq", "deepseek", "openrouter", "ollama")

OPENAI_EXACT = {
    "gpt-4.1": (2.0, 8.0),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "o3": (10.0, 40.0),
    "o4-mini": (1.1, 4.4),
}
DEFAULT_RATES = (2.0, 8.0)


def rates(provider: str, model: str) -> tuple[float, float]:
    """(input rate, output rate) per million tokens."""
    name = model.lower()
    if provider == "anthropic":
        for marker, pair in (("opus", (15.0, 75.0)), ("sonnet", (3.0, 15.0)), ("haiku", (0.25, 1.25))):
            if marker in name:
                return pair
        return (3.0, 15.0)
    if provider == "gemini":
        if "flash" in name:
            return (0.15, 0.6)
        if "pro" in name:
            return (1.25, 10.0)
        return (0.15, 0.6)
    return OPENAI_EXACT.get(name, DEFAULT_RATES)


def cost_usd(provider: str, model: str, input_tokens: int, output_tokens: int) -> float:
    rate_in, rate_out = rates(provider, model)
    return (input_tokens * rate_in + output_tokens * rate_out) / 1_000_000
