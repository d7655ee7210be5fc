"""A small real MCP server for the tests of `tools.mcp`, built with the official SDK's `MCPServer`.

Run over stdio (`python mcp_server_demo.py`) or streamable HTTP on loopback (`python mcp_server_demo.py http
PORT`). `--name NAME` changes the server's name and `--only a,b` keeps only some tools, so two servers with
colliding tool names can be started from the same file.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys

import mcp_types
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def build(name: str, only: set[str] | None) -> MCPServer:
    server: MCPServer = MCPServer(name, log_level="ERROR")

    def register(fn):  # type: ignore[no-untyped-def]
        if only is None or fn.__name__ in only:
            server.tool()(fn)
        return fn

    @register
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @register
    def echo(text: str, times: int = 1) -> str:
        """Repeat a text."""
        return " ".join([text] * times)

    @register
    def fail(reason: str) -> str:
        """Always fails with the given reason."""
        raise ToolError(f"failed on purpose: {reason}")

    @register
    def crash() -> str:
        """Raises an unexpected exception (the SDK hides its message)."""
        raise RuntimeError("secret internals")

    @register
    async def hang() -> str:
        """Never returns."""
        await asyncio.sleep(3600)
        return "unreachable"

    @register
    def die() -> str:
        """Kills the server process mid-call."""
        os._exit(3)

    @register
    def picture() -> list[mcp_types.ContentBlock]:
        """Returns a caption and a tiny PNG."""
        return [
            mcp_types.TextContent(text="a red pixel"),
            mcp_types.ImageContent(data=base64.b64encode(TINY_PNG).decode(), mime_type="image/png"),
        ]

    @register
    def document() -> list[mcp_types.ContentBlock]:
        """Returns an embedded text resource, a binary one and a resource link."""
        return [
            mcp_types.EmbeddedResource(
                resource=mcp_types.TextResourceContents(
                    uri="file:///notes/todo.md",
                    mime_type="text/markdown",
                    text="- buy milk\n- fix the barrier",
                )
            ),
            mcp_types.EmbeddedResource(
                resource=mcp_types.BlobResourceContents(
                    uri="file:///data/blob.bin", mime_type="application/octet-stream", blob="AAECAw=="
                )
            ),
            mcp_types.ResourceLink(
                uri="https://example.org/report.pdf",
                name="report",
                mime_type="application/pdf",
                description="The annual report",
            ),
        ]

    @register
    def pid() -> int:
        """The server's process id (to check that it is gone after shutdown)."""
        return os.getpid()

    @register
    def whoami() -> str:
        """Says which server answered and what GREETING is in its environment."""
        return f"{name} {os.environ.get('GREETING', '-')}"

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", nargs="?", default="stdio", choices=["stdio", "http"])
    parser.add_argument("port", nargs="?", type=int, default=0)
    parser.add_argument("--name", default="demo")
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    server = build(args.name, only)
    if args.transport == "stdio":
        server.run("stdio")
    else:
        print(f"listening on {args.port}", file=sys.stderr, flush=True)
        server.run("streamable-http", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
