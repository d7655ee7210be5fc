"""Turning a fetched body into text a model can read: charset decoding, HTML to Markdown, JSON, PDF.

HTML goes through readability-lxml (finds the main content: drops navigation, ads, footers, sidebars) and then
markdownify (headings, links, lists, tables, code blocks as Markdown). That pair was chosen over trafilatura,
html2text and inscriptis by `benchmarks/web_fetch.py --compare-extractors` on the saved pages under
`tests/tools/fixtures/`: it kept all of the main content of every page (trafilatura lost most posts of a forum
thread and its code blocks) while dropping boilerplate, and both are permissively licensed (html2text scored
the same and is faster, but is GPL). When readability finds almost nothing (link lists, index pages), the
whole page is converted with the obvious boilerplate elements removed, so the model still sees something.

All functions here are synchronous and CPU-bound; `tools.web` runs `extract` in a worker process that it can
kill when the fetch's deadline passes (`tools.web_worker`). The extraction libraries are imported on first use,
so importing `tools.web` stays cheap. Whatever the body holds, `extract` returns an `Extracted` or raises
`Unreadable`: charset labels naming codecs that are not text encodings (`rot13`, `zlib`, `base64`, ...) are
ignored, JSON nested too deep stays raw text, and HTML the converters cannot handle (nesting deeper than
libxml2's 256 levels, recursion in the converters) falls back to its text with the tags stripped.
"""

from __future__ import annotations

import codecs
import html as html_module
import io
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from prompts.errors import RunError

__all__ = [
    "Extracted",
    "Unreadable",
    "decode_text",
    "extract",
    "html_to_markdown",
    "pdf_to_text",
    "pretty_json",
    "sniff_kind",
    "stripped_text",
]

Kind = Literal["html", "json", "text", "pdf"]

# Labels browsers treat as another encoding (WHATWG Encoding Standard): a page that says latin-1 is read as
# windows-1252, since that is what its author saw.
_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "windows-1252": "cp1252",
    "x-cp1252": "cp1252",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "iso-8859-9": "cp1254",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
}
_LATIN_CODECS = frozenset(
    codecs.lookup(name).name
    for name in (
        "cp1250",
        "cp1254",
        "cp1257",
        "iso8859-2",
        "iso8859-3",
        "iso8859-4",
        "iso8859-9",
        "iso8859-10",
        "iso8859-13",
        "iso8859-14",
        "iso8859-15",
        "iso8859-16",
        "latin-1",
        "mac-roman",
        "mac-latin2",
    )
)
# Text encodings by Python's reckoning that no web page is in: `undefined` always raises, the escape codecs read
# backslash sequences (and make lone surrogates), idna/punycode are for host names, and UTF-7 is refused by
# browsers since it hides markup in plain ASCII.
_NOT_CHARSETS = frozenset(
    codecs.lookup(name).name
    for name in ("undefined", "unicode_escape", "raw_unicode_escape", "idna", "punycode", "utf-7")
)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""")
_PRESCAN_BYTES = 16_384  # browsers look at 1 KB; real pages put the meta tag later behind scripts
_DETECT_BYTES = 262_144  # charset detection is slow on megabytes; a quarter of one decides as well
_BLANK_RUNS = re.compile(r"\n[ \t]*(?:\n[ \t]*){2,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BOILERPLATE_TAGS = (
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "iframe",
    "form",
    "button",
    "nav",
    "header",
    "footer",
    "aside",
)
_LAYOUT_BLOCKS = ["table", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "pre", "blockquote", "form"]
_TABLE_PARTS = ["tbody", "thead", "tfoot", "tr", "td", "th"]
_LIBXML2_MAX_DEPTH = 256  # without XML_PARSE_HUGE, which would let a hostile page nest without bound
# For `stripped_text`. A tag never contains "<", so a stray "<" cannot make a match scan on to the end of the page.
_HIDDEN_START = re.compile(r"<!--|<(script|style|noscript|template|title)[\s>]", re.IGNORECASE)
_BLOCK_TAG = re.compile(
    r"</?(?:address|article|aside|blockquote|br|dd|div|dl|dt|figcaption|figure|footer|form|h[1-6]|header|hr"
    r"|li|main|nav|ol|p|pre|section|table|td|th|tr|ul)\b[^<>]*>",
    re.IGNORECASE,
)
_ANY_TAG = re.compile(r"<[/!?]?[A-Za-z][^<>]*>")
_SPACE_RUNS = re.compile(r"[ \t\r\f\v]+")
_BOILERPLATE_ROLES = ("navigation", "banner", "contentinfo", "search", "complementary", "dialog")


def _codec(label: str | None) -> str | None:
    """A Python codec name for a charset label, or None if the label names no text encoding (then it is
    ignored, as browsers ignore labels they do not know).

    The label comes from the server. Python's codec registry also holds bytes-to-bytes and str-to-str
    transforms (`rot13`, `hex`, `zlib`, `base64`, `bz2`, `uu`, ...) and codecs that are not charsets at all
    (`undefined` always raises, `unicode_escape` turns `\\ud800` into a lone surrogate); decoding a page with
    one of those raises TypeError, zlib.error, binascii.Error or OSError, or produces nonsense.
    """
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    name = _ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):  # unknown, or a NUL in the label
        return None
    if not info._is_text_encoding or info.name in _NOT_CHARSETS:
        return None
    return info.name


def _try_decode(data: bytes, codec: str, final: bool) -> str | None:
    """Strict decode; a body cut at the byte cap may end inside a character, so only a final one is whole."""
    try:
        return codecs.getincrementaldecoder(codec)("strict").decode(data, final=final)
    except Exception:  # UnicodeError and, from codecs registered by other packages, anything
        return None


def _decode_replacing(data: bytes, codec: str, final: bool) -> str:
    try:
        return codecs.getincrementaldecoder(codec)("replace").decode(data, final=final)
    except Exception:  # a codec that fails even with replacement: UTF-8 never does
        return data.decode("utf-8", "replace")


def _declared(data: bytes) -> str | None:
    head = data[:_PRESCAN_BYTES]
    found = _XML_ENCODING.match(head) or _META_CHARSET.search(head)
    return found.group(1).decode("ascii", "replace") if found else None


def decode_text(data: bytes, header_charset: str | None, *, truncated: bool = False) -> tuple[str, str]:
    """Decode a body to text; returns (text, codec used).

    Order: a byte-order mark; valid UTF-8 (legacy text is practically never valid UTF-8 by chance, while
    servers often label UTF-8 pages latin-1); the charset of the Content-Type header, then of a `<meta>` tag
    or XML declaration, if the bytes decode under it; charset detection; windows-1252 with replacement marks.
    """
    final = not truncated
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return _decode_replacing(data, codec, final), codec
    as_utf8 = _try_decode(data, "utf-8", final)
    if as_utf8 is not None:
        return as_utf8, "utf-8"
    for label in (header_charset, _declared(data)):
        declared = _codec(label)
        if declared is not None:
            decoded = _try_decode(data, declared, final)
            if decoded is not None:
                return decoded, declared
    codec = _detect(data[:_DETECT_BYTES]) or "cp1252"
    if codec in _LATIN_CODECS and _try_decode(data, "cp1252", final) is not None:
        # Detection cannot tell the Latin code pages apart on short texts (é vs č is one byte either way);
        # windows-1252 is by far the most common, and what browsers assume for such pages.
        codec = "cp1252"
    return _decode_replacing(data, codec, final), codec


def _detect(sample: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # optional: without it, legacy pages fall back to windows-1252
        return None
    try:
        best = from_bytes(sample).best()
    except Exception:  # detection is a guess; a failed guess means windows-1252, not a failed fetch
        return None
    return _codec(best.encoding) if best is not None else None


def sniff_kind(mime: str, data: bytes) -> Kind | Literal["binary"]:
    """What a body is: 'html', 'json', 'text', 'pdf' or 'binary', from its media type, else from its bytes."""
    if mime in ("text/html", "application/xhtml+xml"):
        return "html"
    if mime in ("application/json", "text/json") or mime.endswith("+json"):
        return "json"
    if mime == "application/pdf":
        return "pdf"
    textual = mime.startswith("text/") or mime.endswith(("+xml", "/xml", "/javascript", "/ecmascript"))
    if textual or mime in (
        "application/x-ndjson",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
    ):
        return "text"
    if mime and mime not in ("application/octet-stream", "binary/octet-stream", "application/unknown"):
        return "binary"
    head = data[:1024].lstrip().lower()
    if head.startswith(b"%pdf-"):
        return "pdf"
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head or b"<head" in head:
        return "html"
    if b"\x00" in head and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "binary"
    if head.startswith((b"{", b"[")):
        return "json"
    return "text"


def pretty_json(text: str) -> str:
    """Indented JSON (non-ASCII kept), or the text unchanged if it does not parse (e.g. cut at the cap) or is
    nested too deep to parse or indent (both recurse once per level)."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return text


def _tidy(markdown: str) -> str:
    return _BLANK_RUNS.sub("\n\n", _TRAILING_SPACE.sub("\n", markdown)).strip()


def _unwrap_layout_tables(soup: Any) -> None:
    """Turn tables used for page layout (holding headings, lists or other tables) into plain blocks.

    Old sites lay out whole pages with tables; converted as Markdown tables, every paragraph would be
    squeezed into one cell of one row. One search per table keeps this linear on big pages.
    """
    for table in soup.find_all("table"):
        if table.find(_LAYOUT_BLOCKS) is not None:
            for part in table.find_all(_TABLE_PARTS):
                if part.find_parent("table") is table:
                    part.name = "div"
            table.name = "div"
    for part in soup.find_all(_TABLE_PARTS):
        if part.find_parent("table") is None:  # readability cuts a layout cell out of its table
            part.name = "div"


def _cut_tree(root: Any, max_chars: int) -> bool:
    """Drop everything after about the first `max_chars` characters of text (an lxml tree, in place).

    Converting text that will be cut anyway is most of the cost on multi-megabyte pages, and the cut is done
    in lxml because removing nodes one by one from a BeautifulSoup tree is quadratic.
    """
    total = 0
    last = None
    for element in root.iter():
        total += len((element.text or "").strip()) + len((element.tail or "").strip())
        if total > max_chars:
            last = element
            break
    if last is None:
        return False
    for child in list(last):
        last.remove(child)
    node = last
    while node is not None and node is not root:
        parent = node.getparent()
        if parent is None:
            break
        for sibling in list(node.itersiblings()):
            parent.remove(sibling)
        node = parent
    return True


def _to_soup(root: Any, url: str, max_chars: int | None) -> tuple[Any, bool]:
    """A BeautifulSoup of an lxml tree cut at `max_chars`, with links made absolute against `url`."""
    import lxml.html  # type: ignore[import-untyped]
    from bs4 import BeautifulSoup

    cut = max_chars is not None and _cut_tree(root, max_chars)
    soup = BeautifulSoup(lxml.html.tostring(root, encoding="unicode"), "lxml")
    _absolute_links(soup, url)
    return soup, cut


def _absolute_links(soup: Any, url: str) -> None:
    from urllib.parse import urljoin

    for link in soup.find_all("a", href=True):
        href = str(link["href"]).strip()
        if href and not href.startswith(("#", "javascript:", "mailto:", "data:")):
            try:
                link["href"] = urljoin(url, href)
            except ValueError:  # e.g. a malformed IPv6 host in the link
                continue


def _soup_to_markdown(soup: Any) -> str:
    from markdownify import MarkdownConverter

    _unwrap_layout_tables(soup)
    from prompts.templating import render_tool_text

    for img in soup.find_all("img"):
        alt = (img.get("alt") or "").strip()
        # Images carry no text for the model; their alt text does (and data: URLs would flood the context).
        img.replace_with(render_tool_text("web/image", alt=alt) if alt else "")
    converter = MarkdownConverter(
        heading_style="ATX",
        bullets="-",
        escape_underscores=False,
        escape_asterisks=False,
        escape_misc=False,
        table_infer_header=True,
        strip=["script", "style", "noscript"],
    )
    return str(converter.convert_soup(soup))


def _whole_page(html: str, url: str, max_chars: int | None) -> tuple[str, bool]:
    """The page minus navigation, headers, footers, forms and scripts: for pages readability cannot read."""
    import lxml.html

    try:
        root = lxml.html.document_fromstring(html)
    except Exception:  # lxml raises several types for empty or odd documents
        return "", False
    doomed = [e for e in root.iter(*_BOILERPLATE_TAGS)]
    doomed += [e for e in root.iter() if isinstance(e.tag, str) and e.get("role") in _BOILERPLATE_ROLES]
    for element in doomed:
        if element.getparent() is not None:
            element.drop_tree()
    body = root.find("body")
    soup, cut = _to_soup(body if body is not None else root, url, max_chars)
    return _tidy(_soup_to_markdown(soup)), cut


def _page_facts(html: str, *, count_visible: bool) -> tuple[int, bool]:
    """The page's visible characters (scripts and styles aside; 0 unless `count_visible`), and whether
    libxml2 cut its tree short.

    libxml2 stops building the tree at 256 levels of nesting and silently drops what is deeper, so a page
    nested deeper converts to a fraction of its text (or none) without any error.
    """
    import lxml.html

    try:
        root = lxml.html.document_fromstring(html)
    except Exception:  # lxml raises several types for empty or odd documents
        return 0, False
    # One step per level from the root: visits each element once (a count of ancestors per element would
    # cost the depth each time).
    too_deep = bool(root.xpath("boolean(" + "/*" * (_LIBXML2_MAX_DEPTH - 5) + ")"))
    if not count_visible:
        return 0, too_deep
    for element in root.iter("script", "style", "noscript", "template"):
        element.drop_tree()
    # Counted piece by piece: the whole text as one string, split into words, would cost more than the tree.
    return sum(len(" ".join(piece.split())) for piece in root.itertext()), too_deep


def stripped_text(html: str) -> str:
    """The text of an HTML document with its tags dropped and entities decoded: for pages the converters
    cannot handle. Linear in the length of the page whatever it holds: no tree, no recursion, and no pattern
    that can scan to the end of the page more than once."""
    parts: list[str] = []
    pos = 0
    while True:
        special = _HIDDEN_START.search(html, pos)
        segment = html[pos : special.start() if special else len(html)]
        parts.append(_ANY_TAG.sub(" ", _BLOCK_TAG.sub("\n", segment)))
        if special is None:
            break
        if special.group(1) is None:  # a comment
            end = html.find("-->", special.end())
            pos = -1 if end < 0 else end + 3
        else:  # raw text up to the matching end tag, as browsers read <script> and <style>
            close = re.compile(rf"</{special.group(1)}[\s>]", re.IGNORECASE).search(html, special.end())
            pos = -1 if close is None else close.end()
        if pos < 0:  # unclosed: it hides the rest of the page, in browsers too
            break
        parts.append(" ")
    text = html_module.unescape("".join(parts))
    return _tidy(_SPACE_RUNS.sub(" ", text))


def _main_content(html: str, url: str, max_chars: int | None) -> tuple[str, str | None, bool]:
    """Readability's main content as Markdown, the title, whether the text was cut; ("", None, False) if
    readability or the converters fail on the page."""
    import logging

    import lxml.html
    from readability import Document  # type: ignore[import-untyped]

    # It logs every page at INFO and a traceback for pages it cannot read, which are handled here.
    logging.getLogger("readability.readability").setLevel(logging.CRITICAL)
    title: str | None = None
    try:
        # No url= here: readability would rewrite every link of the whole page; only the kept ones are.
        document = Document(html)
        summary = document.summary(html_partial=True)
        # After summary(), which parsed the page: asked first, the title would cost a parse of its own.
        title = (document.short_title() or document.title() or "").strip() or None
        title = None if title == "[no-title]" else title  # readability's placeholder
        del document
        soup, cut = _to_soup(lxml.html.fromstring(summary), url, max_chars)
        return _tidy(_soup_to_markdown(soup)), title, cut
    except Exception:  # readability raises Unparseable and lxml errors on empty or broken documents;
        return "", title, False  # the converters recurse per level of nesting (RecursionError)


def html_to_markdown(html: str, url: str, max_chars: int | None = None) -> tuple[str, str | None, bool]:
    """Markdown of the main content of an HTML page, its title, and whether the text was cut at `max_chars`
    (before conversion, so a huge page costs little more than its first `max_chars`). Links are absolute.

    Never raises for what the page holds: a page the converters cannot handle comes back as its text with
    the tags stripped (see `stripped_text`)."""
    markdown, title, cut = _main_content(html, url, max_chars)
    # After readability's trees are freed: a second tree of a big page at the same time costs ~60 MB more.
    visible, too_deep = _page_facts(html, count_visible=len(markdown) < 1000)
    if not too_deep and len(markdown) < 1000 and len(markdown) < 0.4 * visible:
        # Readability keeps the one block it believes is the article; on index pages, link lists and
        # tiny pages it can keep almost nothing while the page has plenty to read.
        try:
            markdown, cut = _whole_page(html, url, max_chars)
        except Exception:  # recursion in the converters, as above
            markdown = ""
    if too_deep or not markdown:
        markdown = stripped_text(html)
        cut = max_chars is not None and len(markdown) > max_chars
        markdown = markdown[:max_chars] if max_chars is not None else markdown
    if title and not markdown.lstrip().startswith("#"):
        markdown = f"# {title}\n\n{markdown}"
    return markdown, title, cut


def pdf_to_text(data: bytes, max_pages: int = 500) -> str:
    """The text of a PDF's pages, each headed by its number. Raises ImportError without pypdf."""
    from pypdf import PdfReader

    from prompts.templating import render_tool_text

    reader = PdfReader(io.BytesIO(data))
    parts: list[str] = []
    for number, page in enumerate(reader.pages[:max_pages], start=1):
        text = (page.extract_text() or "").strip()
        parts.append(render_tool_text("web/pdf_page", number=number, text=text))
    if len(reader.pages) > max_pages:
        parts.append(render_tool_text("web/pdf_pages_not_read", count=len(reader.pages) - max_pages))
    return "\n\n".join(parts)


class Unreadable(RunError):
    """The body cannot be turned into text. `reason` names the sentence `tools.web` shows the model
    (`prompts/templates/tools/web/unreadable_<reason>.j2`); `details` fills it in. Plain data, so that it
    crosses from the worker process as JSON."""

    def __init__(self, reason: str, **details: str | int | bool) -> None:
        super().__init__(reason, details)
        self.reason = reason
        self.details = details


@dataclass(frozen=True)
class Extracted:
    """A body read as text: how it was read, the text, the codec used, the page's title, and whether the
    text was cut at `max_chars` before conversion."""

    kind: Kind
    text: str
    codec: str | None = None
    title: str | None = None
    cut: bool = False


def extract(
    data: bytes, mime: str, charset: str | None, truncated: bool, url: str, max_chars: int
) -> Extracted:
    """A body as readable text, or `Unreadable` saying why not; never any other exception for what the body
    holds (a bug or a missing library aside, which `tools.web` turns into an error sentence too)."""
    kind = sniff_kind(mime, data)
    if kind == "binary":
        raise Unreadable("binary", mime=mime, size=len(data), truncated=truncated)
    if kind == "pdf":
        if truncated:
            raise Unreadable("pdf_too_large", size=len(data))
        try:
            return Extracted("pdf", pdf_to_text(data))
        except ImportError:
            raise Unreadable("pdf_needs_pypdf") from None
        except Exception as exc:  # pypdf raises many types (and RecursionError) for damaged files
            raise Unreadable("pdf_broken", error=f"{type(exc).__name__}: {exc}") from exc
    text, codec = decode_text(data, charset, truncated=truncated)
    if kind == "html":
        try:
            markdown, title, cut = html_to_markdown(text, url, max_chars)
        except ImportError as exc:  # the web extra is missing; web_fetch_tool() refuses to start without it
            raise Unreadable("html_needs_library", module=exc.name or "lxml") from exc
        return Extracted("html", markdown, codec, title, cut)
    if kind == "json":
        return Extracted("json", pretty_json(text), codec)
    return Extracted("text", text, codec)
