"""The framed block that announces a newly generated first-admin API key (server log and `starpod init`).

Its `save this! sp_live_…` line is what scripts (and the tests) look for in a server log.
"""
from __future__ import annotations

from pathlib import Path

RULE = "=" * 78


def admin_key_banner(key: str, port: int, home: Path) -> str:
    """A multi-line block, starting on a fresh line, that says what the key is and how to use it."""
    base_url = f"http://localhost:{port}"
    lines = [
        RULE,
        "  STARPOD FIRST ADMIN API KEY",
        "",
        f"  New admin API key generated \u2014 save this! {key}",
        "",
        "  It is shown only this once: Starpod keeps only a hash and cannot show it again.",
        "  Use it as the X-API-Key header, e.g.",
        f'      curl -H "X-API-Key: {key}" {base_url}/api/auth/verify',
        f"  or open {base_url}/ in a browser and paste it when asked.",
        f"  Lost it? `starpod --home {home} keys create <user-id>` prints a new one",
        f"  (user ids: `starpod --home {home} users list`).",
        RULE,
    ]
    return "\n" + "\n".join(lines)
