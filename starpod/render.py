"""Markdown to safe HTML for the web UI: markdown-it-py renders, nh3 (ammonia) sanitizes.

Raw HTML in the text is never passed through: markdown-it escapes it (`html` off) and nh3 then
drops every tag, attribute and URL scheme outside an allow-list, so no script, event handler or
`javascript:` link survives.  Links open in a new tab with `rel="noopener noreferrer nofollow"`.
No Flask here.
"""
from __future__ import annotations

import copy
import re

import nh3
from markdown_it import MarkdownIt

MAX_RENDER_BYTES = 512 * 1024
URL_SCHEMES = {"http", "https", "mailto"}
LINK_REL = "noopener noreferrer nofollow"
# `language-x` on code blocks lets the UI highlight; any other class is dropped.
CODE_CLASS_RE = re.compile(r"^language-[A-Za-z0-9_+#.-]{1,32}$")

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"])

_attributes = copy.deepcopy(nh3.ALLOWED_ATTRIBUTES)
_attributes["code"] = {"class"}
for _cell in ("th", "td"):
    _attributes[_cell] = _attributes.get(_cell, set()) | {"style"}  # table column alignment


def _keep_attribute(tag: str, name: str, value: str) -> str | None:
    if tag == "code" and name == "class":
        return value if CODE_CLASS_RE.match(value) else None
    return value


def sanitize(html: str) -> str:
    """`html` with everything that could run script or frame the page removed."""
    return nh3.clean(html, attributes=_attributes, attribute_filter=_keep_attribute, url_schemes=URL_SCHEMES,
                     link_rel=LINK_REL, set_tag_attribute_values={"a": {"target": "_blank"}},
                     filter_style_properties={"text-align"}, strip_comments=True)


def render_markdown(text: str) -> str:
    """Sanitized HTML for a markdown `text` (CommonMark plus tables and strikethrough)."""
    return sanitize(_markdown.render(text))
