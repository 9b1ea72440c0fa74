"""Markdown rendering: the sanitizer neutralizes script, handlers and unsafe URLs; POST /api/render and
GET /api/sessions/<id>/messages?render=1 serve it with the usual auth and errors."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from starpod import sessions
from starpod.models import Session
from starpod.render import MAX_RENDER_BYTES, render_markdown, sanitize

ATTACKS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<div onclick='alert(1)'>x</div>",
    "<svg onload=alert(1)>",
    "<iframe src='https://evil.example'></iframe>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](vbscript:msgbox(1))",
    "![x](javascript:alert(1))",
    "<a href='javascript:alert(1)'>x</a>",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "```\n</code></pre><script>alert(1)</script>\n```",
    "<style>body{display:none}</style>",
]


class _Tags(HTMLParser):
    """Every real start tag of a fragment with its attributes (escaped text is not a tag)."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {name: value or "" for name, value in attrs}))


def assert_inert(html: str) -> None:
    """No script-capable tag, no event handler, no script or data URL in `html`."""
    for tag, attrs in _Tags(html).tags:
        assert tag not in ("script", "iframe", "svg", "style", "object", "embed", "form"), html
        assert not [name for name in attrs if name.startswith("on")], html
        for name in ("href", "src"):
            scheme = re.sub(r"[\x00-\x20]", "", attrs.get(name, "")).lower()
            assert not scheme.startswith(("javascript:", "vbscript:", "data:")), html


@pytest.mark.parametrize("text", ATTACKS)
def test_attacks_are_neutralized(text):
    assert_inert(render_markdown(text))


def test_sanitize_alone_strips_dangerous_html():
    """Even HTML that did not come from the markdown renderer (defence in depth) comes out inert."""
    dirty = ('<p onclick="x()">hi<script>alert(1)</script><img src="x" onerror="alert(1)">'
             '<a href="javascript:alert(1)">a</a><a href="https://ok.example">b</a>'
             '<code class="language-py evil">c</code><code class="x">d</code></p>')
    clean = sanitize(dirty)
    assert_inert(clean)
    assert '<img src="x">' in clean and 'class=' not in clean.split("<code")[2]
    assert '<a href="https://ok.example" target="_blank" rel="noopener noreferrer nofollow">b</a>' in clean


def test_markdown_features_render():
    html = render_markdown("# Title\n\n**bold** _it_ ~~gone~~ `code`\n\n- a\n- b\n\n"
                           "```python\nprint(1)\n```\n\n| x | y |\n|--:|---|\n| 1 | 2 |\n\n"
                           "[site](https://example.com) <https://auto.example> [mail](mailto:a@b.c)")
    for fragment in ("<h1>Title</h1>", "<strong>bold</strong>", "<em>it</em>", "<s>gone</s>", "<code>code</code>",
                     "<li>a</li>", '<code class="language-python">print(1)\n</code>',
                     '<th style="text-align:right">x</th>', "<td>2</td>",
                     '<a href="https://example.com" target="_blank" rel="noopener noreferrer nofollow">site</a>',
                     '<a href="https://auto.example" target="_blank" rel="noopener noreferrer nofollow">',
                     '<a href="mailto:a@b.c"'):
        assert fragment in html, (fragment, html)


def test_raw_html_is_shown_as_text():
    assert render_markdown("a <b>b</b> & c") == "<p>a &lt;b&gt;b&lt;/b&gt; &amp; c</p>\n"


# --- POST /api/render ------------------------------------------------------------------------

def test_render_route(client, admin_headers):
    r = client.post("/api/render", json={"text": "**hi** <script>alert(1)</script>"}, headers=admin_headers)
    assert r.status_code == 200
    assert r.get_json() == {"html": "<p><strong>hi</strong> &lt;script&gt;alert(1)&lt;/script&gt;</p>\n"}


def test_render_route_any_user_but_authenticated(client, make_user, admin):
    _, key = make_user("user")
    assert client.post("/api/render", json={"text": "x"}, headers={"X-API-Key": key}).status_code == 200
    assert client.post("/api/render", json={"text": "x"}).status_code == 401
    assert client.post("/api/render", data="{bad", content_type="application/json").status_code == 401


@pytest.mark.parametrize("body,status", [({}, 422), ({"text": 5}, 422), ({"text": None}, 422),
                                         ({"text": "\ud800"}, 422)])
def test_render_route_bad_bodies(client, admin_headers, body, status):
    r = client.post("/api/render", json=body, headers=admin_headers)
    assert r.status_code == status and "text" in r.get_json()["fields"]


def test_render_route_malformed_json_and_size_cap(client, admin_headers):
    r = client.post("/api/render", data="{bad", content_type="application/json", headers=admin_headers)
    assert r.status_code == 400 and "error" in r.get_json()
    big = client.post("/api/render", json={"text": "a" * (MAX_RENDER_BYTES + 1)}, headers=admin_headers)
    assert big.status_code == 413 and "text" in big.get_json()["fields"]
    assert client.post("/api/render", json={"text": "a" * MAX_RENDER_BYTES}, headers=admin_headers).status_code == 200


# --- messages ?render=1 ----------------------------------------------------------------------

@pytest.fixture
def stored_session(app):
    session = Session.create(user_id="admin", title="t")
    sessions.add_message(session.id, "user", "show me <script>alert(1)</script>")
    sessions.add_message(session.id, "tool_use", sessions.tool_use_row("t1", "Read", {"file_path": "<x>"}))
    sessions.add_message(session.id, "assistant", "**Done** [ok](javascript:alert(1)) <img src=x onerror=alert(1)>")
    return session


def test_messages_render_html_only_when_asked(client, stored_session):
    plain = client.get(f"/api/sessions/{stored_session.id}/messages").get_json()
    assert all("html" not in row for row in plain)
    rows = client.get(f"/api/sessions/{stored_session.id}/messages?render=1").get_json()
    assert [row["content"] for row in rows] == [row["content"] for row in plain]
    user, tool, assistant = rows
    assert user["html"] == "<p>show me &lt;script&gt;alert(1)&lt;/script&gt;</p>\n"
    assert tool["html"] is None
    assert assistant["html"].startswith("<p><strong>Done</strong>")
    for row in (user, assistant):
        assert_inert(row["html"])
    assert client.get(f"/api/sessions/{stored_session.id}/messages?render=maybe").status_code == 422


def test_render_in_openapi(client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    assert {"200", "400", "401", "413", "422"} <= set(paths["/api/render"]["post"]["responses"])
    parameters = paths["/api/sessions/{session_id}/messages"]["get"]["parameters"]
    assert any(p["name"] == "render" for p in parameters)
