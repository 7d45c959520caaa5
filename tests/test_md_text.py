"""``md_text``: data-derived text is backslash-escaped so that Markdown shows it as the same characters."""
from __future__ import annotations

import re

import pytest
from helpers import md_plain

from scclust_core.ui.common import MD_SPECIAL, md_text

PAYLOADS = ["![x](http://127.0.0.1:9/p.png)", "[click](javascript:alert(1))", "**bold** __b__ *i* _i_",
            "`code` ``x``", "<img src=x onerror=alert(1)>", "$x^2$ $$y$$", "# heading", "1. item", "- item",
            "+ item", "> quote", "a | b", "~~strike~~", ":red[red] :material/home:", "&lt;b&gt; &#33;[x](y)",
            "{curly}", "back\\slash \\[x\\](y)", "tab\there", "plain CD3E-1 0.5"]


def _tokens_fully_escaped(text: str) -> bool:
    """Every Markdown special character is escaped by a backslash that is not itself escaped."""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1] not in MD_SPECIAL:
                return False
            i += 2
            continue
        if c in MD_SPECIAL:
            return False
        i += 1
    return True


@pytest.mark.parametrize("raw", PAYLOADS)
def test_every_special_character_is_escaped_and_the_text_reads_the_same(raw):
    out = md_text(raw)
    assert _tokens_fully_escaped(out), out
    assert md_plain(out) == raw  # CommonMark shows a backslash-escaped punctuation character as itself
    for markup in ("![", "](", "**", "__", "<img", "$x", "~~", "[click"):
        assert not re.search(r"(?<!\\)" + re.escape(markup), out), (markup, out)


def test_line_breaks_become_spaces_and_non_strings_are_converted():
    assert md_text("a\nb\r\nc\rd") == "a b c d"
    assert md_text("x\n# h\n---\n===") == r"x \# h \-\-\- ==="
    assert md_text(3) == "3" and md_text(None) == "None"
    assert md_text(ValueError("bad [x](y)")) == r"bad \[x\]\(y\)"


def test_renders_as_plain_text_with_a_commonmark_renderer():
    markdown_it = pytest.importorskip("markdown_it")
    import html

    md = markdown_it.MarkdownIt("commonmark").enable(["strikethrough", "table"])
    for raw in PAYLOADS:
        rendered = md.render(md_text(raw))
        assert "<img" not in rendered and "<a " not in rendered and "<strong" not in rendered, rendered
        shown = html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()
        assert shown == raw.strip()
