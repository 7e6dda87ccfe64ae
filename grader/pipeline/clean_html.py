"""The feedback page's HTML cleaning: the student's markdown, HTML outputs and SVGs, with nothing that runs.

nbconvert's own ``clean_html`` filter uses bleach, which is end-of-life; this one uses nh3 (Python bindings to the
Rust ``ammonia`` sanitizer, bleach's maintained successor: https://nh3.readthedocs.io). Scripts, styles, event
handlers and every attribute not listed are removed. Links keep only the schemes a feedback page needs (http,
https, mailto, and relative links); a ``data:`` URI survives only as an image's ``src`` with an image type (a
picture the student pasted into markdown), never as a link, where ``data:text/html`` would be a page of its own.
"""
from __future__ import annotations

import nh3

# bleach's default tags (nbconvert's allowlist started from them) plus plain document markup: nbconvert's own list
# escapes headings and paragraphs, which left raw "<h1 ...>" text on every page.
FEEDBACK_TAGS = {
    "a", "abbr", "acronym", "b", "blockquote", "code", "em", "i", "li", "ol", "strong", "ul",
    "div", "span", "pre", "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead",
    "tbody", "tr", "th", "td", "img", "sub", "sup", "del", "details", "summary"}
FEEDBACK_ATTRIBUTES = {"*": {"class", "id", "title"}, "a": {"href", "title"}, "img": {"src", "alt", "width", "height"},
                       "th": {"align"}, "td": {"align"}}
LINK_SCHEMES = {"http", "https", "mailto"}
IMAGE_DATA = ("data:image/png", "data:image/jpeg", "data:image/gif", "data:image/webp", "data:image/svg+xml")


def _keep_data_images_only(tag: str, attribute: str, value: str) -> str | None:
    """nh3's attribute filter: drop every ``data:`` URI but an image's source (ammonia passes the decoded value)."""
    if value.strip().lower().startswith("data:"):
        image = tag == "img" and attribute == "src" and value.strip().lower().startswith(IMAGE_DATA)
        return value if image else None
    return value


def clean_feedback_html(element) -> str:
    """`element` (str or bytes: nbconvert hands SVG outputs over encoded) as HTML safe to show on a feedback page."""
    text = element.decode() if isinstance(element, bytes) else str(element)
    return nh3.clean(text, tags=FEEDBACK_TAGS, attributes=FEEDBACK_ATTRIBUTES,
                     url_schemes=LINK_SCHEMES | {"data"}, attribute_filter=_keep_data_images_only)
