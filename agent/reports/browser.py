"""Open a report in a real headless Chromium: its DOM after loading, a screenshot, and what a PNG holds.

Used by the browser tests, `benchmarks/report.py` and `scripts/screenshot_report.py`. Chromium is driven
through its own command line (`--dump-dom`, `--screenshot`), so nothing beyond the browser is needed (on
Debian: `apt-get install chromium`; `.ci/install_chromium.sh`). Each call uses a fresh profile in a temporary
folder and switches off Chromium's own background traffic; a report makes no requests of its own (its
Content-Security-Policy forbids them).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from prompts.errors import ConfigurationError

__all__ = ["BrowserError", "PngStats", "dump_dom", "find_chromium", "png_stats", "screenshot"]

ENV_CHROMIUM = "QWQ_AGENT_CHROMIUM"
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserError(ConfigurationError, RuntimeError):
    """Chromium is missing or failed (the message says which, with what it printed)."""


def find_chromium() -> str | None:
    """The Chromium binary: $QWQ_AGENT_CHROMIUM, else the first of chromium, chromium-browser, google-chrome."""
    named = os.environ.get(ENV_CHROMIUM)
    if named:
        return named if Path(named).is_file() else None
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(arguments: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    binary = find_chromium()
    if binary is None:
        raise BrowserError(
            "no Chromium found: install it (Debian: apt-get install chromium; .ci/install_chromium.sh) "
            f"or name the binary in ${ENV_CHROMIUM}"
        )
    with tempfile.TemporaryDirectory(prefix="qwq-agent-chromium-") as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-domain-reliability",
            "--disable-sync",
            "--no-pings",
            "--dns-prefetch-disable",
            f"--user-data-dir={profile}",
            f"--crash-dumps-dir={profile}",
            *arguments,
        ]
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout, check=False, cwd=profile)
        except subprocess.TimeoutExpired:
            raise BrowserError(
                f"Chromium did not finish within {timeout:.0f} s: {' '.join(arguments)}"
            ) from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-2000:]
        raise BrowserError(f"Chromium exited with {done.returncode}: {tail}")
    return done


def _url(page: Path | str) -> str:
    text = str(page)
    return text if "://" in text else Path(page).resolve().as_uri()


def dump_dom(page: Path | str, *, timeout: float = 120) -> str:
    """The page's DOM, serialised by Chromium after it loaded (a URL, or a file path; a `#fragment` is kept)."""
    return _run(["--dump-dom", _url(page)], timeout).stdout.decode("utf-8", errors="replace")


def screenshot(
    page: Path | str, out: Path, *, width: int = 1280, height: int = 1600, timeout: float = 120
) -> Path:
    """A PNG of the top `width` x `height` pixels of the page as Chromium draws it."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--window-size={width},{height}", f"--screenshot={out}", _url(page)], timeout)
    if not out.is_file():
        raise BrowserError(f"Chromium wrote no screenshot to {out}")
    return out


@dataclass(frozen=True)
class PngStats:
    """What a screenshot holds: its size, how many distinct colours, and the share of non-background pixels."""

    width: int
    height: int
    colors: int
    ink: float


def _unfilter(raw: bytes, width: int, height: int, channels: int) -> list[bytes]:
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    at = 0
    for _ in range(height):
        kind = raw[at]
        line = bytearray(raw[at + 1 : at + 1 + stride])
        at += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + predictor) & 0xFF
        rows.append(bytes(line))
        previous = line
    return rows


def png_stats(path: Path, *, step: int = 4) -> PngStats:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) and measure every `step`-th pixel of every
    `step`-th row. The background is the most common colour; `ink` is the share of pixels that differ from it.
    """
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    at = 8
    width = height = channels = 0
    compressed = bytearray()
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        at += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or color not in (2, 6) or interlace:
                raise ValueError(f"{path}: only 8-bit, non-interlaced RGB/RGBA PNGs are read here")
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
    rows = _unfilter(zlib.decompress(bytes(compressed)), width, height, channels)
    counts: dict[bytes, int] = {}
    for row in rows[::step]:
        for x in range(0, width, step):
            pixel = row[x * channels : x * channels + 3]
            counts[pixel] = counts.get(pixel, 0) + 1
    total = sum(counts.values())
    background = max(counts.values()) if counts else 0
    return PngStats(width, height, len(counts), (total - background) / total if total else 0.0)
