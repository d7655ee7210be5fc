"""The built-in tools' descriptions and sentences: prompts/templates/tools/<family>/*.j2, rendered strictly."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from prompts import PromptTemplateError, available_tool_texts, render_tool_text

TOOLS = Path(__file__).resolve().parents[2] / "tools"

TOOL_TEXT_VARIABLES: dict[str, dict[str, Any]] = {
    "mcp/call_failed": {"tool": "search", "error": "ValueError: bad"},
    "mcp/default_description": {"tool": "search", "server": "web"},
    "mcp/exited_before_call": {"tool": "search", "restart_error": "", "restarts_used": 2},
    "mcp/media_block": {"kind": "image", "mime": "image/png", "size": 1234},
    "mcp/not_connected": {"tool": "search", "server": "web"},
    "mcp/other_block": {"kind": "widget"},
    "mcp/resource_binary_block": {"uri": "file:///a.bin", "mime": None, "size": 10},
    "mcp/resource_link_block": {"uri": "https://x.org/r", "name": "r", "mime": None, "description": "d"},
    "mcp/resource_text_block": {"uri": "file:///a.md", "mime": "text/markdown", "text": "- item"},
    "mcp/restarted": {},
    "mcp/server_error": {"tool": "search", "message": "quota exceeded"},
    "mcp/stopped_during_call": {"tool": "search", "restartable": True},
    "mcp/timed_out": {"tool": "search", "seconds": 1.5},
    "mcp/unavailable": {"tool": "search", "why": "failed", "error": "OSError()"},
    "web/address_kind": {"kind": "ipv6_form", "inner": "127.0.0.1", "inner_reason": "a loopback address"},
    "web/bad_redirect": {"url": "http://a/", "location": "file:///x", "error": "no"},
    "web/connect_failed": {"url": "http://a/", "error": "refused"},
    "web/corrupt_compression": {"url": "http://a/", "error": "bad header"},
    "web/description": {},
    "web/error_status": {"status": 404},
    "web/extraction_timed_out": {"url": "http://a/", "seconds": 30.0, "size": 4_900_000},
    "web/extraction_failed": {"url": "http://a/", "error": "the extraction process was killed by signal 9"},
    "web/image": {"alt": "a chart"},
    "web/invalid_url": {"url": "http://[", "error": "Invalid IPv6 URL"},
    "web/no_address": {"host": "a.test", "url": "http://a.test/"},
    "web/no_answer": {"url": "http://a/", "error": "ReadTimeout"},
    "web/no_host": {"url": "http:///"},
    "web/no_such_page": {"page": 3, "pages": 2},
    "web/no_text": {},
    "web/page_position": {
        "page": 1,
        "pages": 2,
        "start": 0,
        "end": 8000,
        "total": 12000,
        "url": "http://a/",
        "next_page": 2,
    },
    "web/param_page": {"page_chars": 8000},
    "web/param_url": {},
    "web/pdf_page": {"number": 1, "text": "Quarterly report"},
    "web/pdf_pages_not_read": {"count": 12},
    "web/read_failed": {"url": "http://a/", "error": "reset"},
    "web/refused": {"url": "http://a/", "host": "a", "ip": "10.0.0.1", "reason": "a private-network address"},
    "web/result_header": {
        "url": "http://a/",
        "final_url": "http://b/",
        "redirected": True,
        "status": 200,
        "reason": "OK",
        "content_type": "text/html",
        "charset": "utf-8",
        "bytes_read": 5000,
        "title": "T",
        "truncated_bytes": True,
        "truncated_chars": False,
        "kept_chars": 400000,
    },
    "web/stopped_sending": {"url": "http://a/", "error": "ReadTimeout"},
    "web/timed_out": {"url": "http://a/", "seconds": 30.0},
    "web/too_many_redirects": {"url": "http://a/", "limit": 5, "stopped_at": "http://f/"},
    "web/unknown_encoding": {"url": "http://a/", "encoding": "br"},
    "web/unreadable_binary": {"url": "http://a/", "mime": "image/png", "size": 2000, "truncated": False},
    "web/unreadable_html_needs_library": {
        "url": "http://a/",
        "module": "lxml",
        "install_hint": "pip install x",
    },
    "web/unreadable_pdf_broken": {"url": "http://a/", "error": "PdfReadError: EOF marker not found"},
    "web/unreadable_pdf_needs_pypdf": {"url": "http://a/"},
    "web/unreadable_pdf_too_large": {"url": "http://a/", "size": 5000000},
    "web/unsupported_scheme": {"url": "ftp://a/"},
    # the Toolbox's sentences about a call's arguments and its outcome
    "toolbox/expected_got": {"expected": "integer", "got": '"two" (string)'},
    "toolbox/invalid_arguments": {"tool_name": "add", "problems": ['"a": missing required argument']},
    "toolbox/invalid_value": {"message": "Input should be a valid integer", "got": '"x" (string)'},
    "toolbox/missing_argument": {"expected": "integer"},
    "toolbox/more_problems": {"count": 3},
    "toolbox/no_type_matched": {"reasons": "expected integer; expected null"},
    "toolbox/not_an_object": {"got": "[1] (array)"},
    "toolbox/not_finite": {"value": "inf"},
    "toolbox/timed_out": {"name": "search", "seconds": "30"},
    "toolbox/too_deep": {"max_depth": 64},
    "toolbox/unexpected_argument": {"accepted": "a, b"},
    "toolbox/unknown_tool": {"name": "serach", "suggestion": "search", "available": ["search"]},
    "toolbox/unserialisable": {"error": "circular reference"},
    "web/unresolvable": {"host": "a.test", "url": "http://a.test/", "error": "Name or service not known"},
}


def test_the_shipped_tool_texts_are_listed() -> None:
    assert available_tool_texts() == sorted(TOOL_TEXT_VARIABLES)


@pytest.mark.parametrize("name", sorted(TOOL_TEXT_VARIABLES))
def test_every_tool_text_renders_with_its_variables(name: str) -> None:
    text = render_tool_text(name, **TOOL_TEXT_VARIABLES[name])
    assert text.strip()
    assert "{{" not in text
    assert "{%" not in text


def test_every_tool_text_the_tools_name_exists() -> None:
    """The names the tools pass to `render_tool_text` (directly, through their `_error` helpers, or as an
    `Unreadable` reason that tools.web turns into `web/unreadable_<reason>`) are all shipped templates."""
    used: set[str] = set()
    for path in TOOLS.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        used |= set(re.findall(r'render_tool_text\(\s*"([a-z_]+/[a-z_]+)"', source))
        family = {"web.py": "web", "mcp.py": "mcp"}.get(path.name)
        if family:
            used |= {f"{family}/{n}" for n in re.findall(r'_error\(\s*"([a-z_]+)"', source)}
        used |= {f"web/unreadable_{n}" for n in re.findall(r'Unreadable\(\s*"([a-z_]+)"', source)}
    assert len(used) > 30
    assert used - set(available_tool_texts()) == set()


def test_the_web_fetch_schema_is_unchanged() -> None:
    from tools.web import web_tools

    [tool] = web_tools()
    assert tool.description == (
        "Fetch a public web page or file over http(s) and read it as text: the main content of HTML pages as "
        "Markdown (headings, links, lists, tables, code), JSON indented, plain text as is, PDFs as text. "
        "Long texts come in pages; the result says which page you have and how to get the next one."
    )
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "url": {"type": "string", "description": "The http or https URL to fetch."},
            "page": {
                "type": "integer",
                "minimum": 1,
                "default": 1,
                "description": "Which page of the text to return (8,000 characters each), from 1.",
            },
        },
        "required": ["url"],
    }


def test_unknown_names_and_misspelt_variables_fail() -> None:
    with pytest.raises(PromptTemplateError, match="no tool text named 'web/nope'"):
        render_tool_text("web/nope")
    with pytest.raises(PromptTemplateError, match="takes no variable pgae"):
        render_tool_text("web/no_such_page", page=1, pages=1, pgae=2)
