"""The host end of the runner's stdin/stdout: length-prefixed JSON frames over Docker's hijacked attach socket.

With `tty=False` Docker multiplexes what the container writes: each chunk carries an 8-byte header (stream
type, three zero bytes, big-endian payload size). What the host writes to stdin is passed through raw.
"""

from __future__ import annotations

import contextlib
import json
import select
import struct
import threading
import time
from typing import Any

from sandboxes._protocol import ProtocolError, decode_frame

__all__ = ["DEFAULT_MAX_FRAME", "Channel", "ChannelClosed", "ChannelTimeout", "ProtocolError"]

_FRAME = struct.Struct(">I")
_MUX = struct.Struct(">BxxxL")
# The runner is untrusted (model code runs as the same user and can write to its stdout): a frame may not make
# the host buffer more than this.
DEFAULT_MAX_FRAME = 64 * 1024 * 1024


class ChannelClosed(Exception):
    """The runner's stdout ended: the container stopped or the runner died."""


class ChannelTimeout(Exception):
    """No complete frame arrived before the deadline."""


class Channel:
    """Frames over one attach socket; `send` may be called from another thread (to cancel a running call)."""

    def __init__(self, attached: Any, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        # Keep the SDK's object alive: for TLS engines its response owns the socket and closes it when collected.
        self._attached = attached
        self._sock: Any = getattr(attached, "_sock", attached)
        if hasattr(self._sock, "settimeout"):
            self._sock.settimeout(None)
        self._raw = bytearray()  # multiplexed bytes not yet parsed
        self._stdout = bytearray()  # the runner's stdout, de-multiplexed
        self._send_lock = threading.Lock()
        self._max_frame = max_frame
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        with self._send_lock:
            try:
                self._sock.sendall(_FRAME.pack(len(body)) + body)
            except (OSError, ValueError) as exc:
                raise ChannelClosed(f"cannot write to the runner: {exc}") from exc

    def recv(self, deadline: float) -> dict[str, Any]:
        """The next frame, waiting until `deadline` (a `time.monotonic()` value)."""
        while True:
            frame = self._take_frame()
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeout()
            if self.closed:
                raise ChannelClosed("the channel was closed")
            try:
                pending = getattr(
                    self._sock, "pending", None
                )  # TLS may hold decrypted bytes select cannot see
                if not (pending and pending()):
                    # Wake at least every second: a Ctrl-C delivered to another thread only raises in the
                    # main thread once a blocking call returns; and a close from another thread is noticed.
                    ready, _, _ = select.select([self._sock], [], [], min(remaining, 1.0))
                    if not ready:
                        continue
                data = self._sock.recv(1 << 20)
            except (OSError, ValueError) as exc:  # ValueError: closed by another thread (fd -1)
                raise ChannelClosed(f"reading from the runner failed: {exc}") from exc
            if not data:
                self.closed = True
                raise ChannelClosed("the runner's output ended")
            self._raw += data
            self._demux()

    def _demux(self) -> None:
        while len(self._raw) >= _MUX.size:
            stream, size = _MUX.unpack_from(self._raw)
            if stream not in (0, 1, 2):
                raise ProtocolError(f"unexpected stream header {bytes(self._raw[:8])!r}")
            if len(self._raw) < _MUX.size + size:
                return
            if stream == 1:
                self._stdout += self._raw[_MUX.size : _MUX.size + size]
            del self._raw[: _MUX.size + size]

    def _take_frame(self) -> dict[str, Any] | None:
        if len(self._stdout) < _FRAME.size:
            return None
        (size,) = _FRAME.unpack_from(self._stdout)
        if size > self._max_frame:
            raise ProtocolError(f"frame of {size} bytes announced")
        if len(self._stdout) < _FRAME.size + size:
            return None
        body = bytes(self._stdout[_FRAME.size : _FRAME.size + size])
        del self._stdout[: _FRAME.size + size]
        return decode_frame(body)

    def close(self) -> None:
        self.closed = True
        for target in (self._sock, self._attached):
            with contextlib.suppress(Exception):
                target.close()
