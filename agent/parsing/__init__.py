"""Think-aware parsing of model output into reasoning, visible content and tool calls.

`parse_completion` (a whole text) and `StreamParser` (deltas) give the same `Completion` for any chunking;
the rules are in `_stream`'s docstring. Call blocks are decoded in `_decode`; the other call forms real
models write (`<tools>`, fenced JSON, `<function=NAME>`, bare JSON lines) in `_forms`, when the caller names
the tools on offer (`tool_names`).
"""

from agent.parsing._decode import CALL_FORMAT, MAX_DEPTH, MalformedCall
from agent.parsing._stream import Completion, StreamParser, parse_completion

__all__ = ["CALL_FORMAT", "MAX_DEPTH", "Completion", "MalformedCall", "StreamParser", "parse_completion"]
