"""The call forms real models write instead of `<tool_call>`, read from the visible answer.

Small models offered tools in QwQ's (Hermes') format often wrap their call object differently: Qwen2.5-Coder
wrote `<tools>{...}</tools>`, fenced ```json blocks and bare JSON lines, and once `<function=...>`. These are
the wrappers llama.cpp's Hermes-2-Pro parser accepts too:

* `<NAME>` ... `</NAME>` for NAME in `_turns.CALL_WRAPPERS` (other than `tool_call`, which the main scanner
  handles), optionally with a fence inside;
* a fenced block opening a line: ```` ```json ````, ```` ```xml ```` or a bare ```` ``` ```` (a fence in any
  other language is code, passed on untouched up to its closing fence);
* `<function=NAME>{arguments}</function>`;
* a bare JSON object opening a line, when nothing but whitespace follows it to the end of the answer.

A region is accepted only when every object in it names one of the offered tools and has an arguments
object; anything else stays content, exactly as written, so a JSON example in prose is never run. Each
acceptance is noted as a repair. The layer sits between the stream scanner and the content channel and
decides on text alone, holding back what might still become a call, so streaming and whole-text parsing
agree for every chunking.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Final

from agent.models._turns import CALL_WRAPPERS
from agent.parsing._decode import (
    MAX_DEPTH,
    MalformedCall,
    clean_value,
    decode_block,
    decode_value,
    nesting_depth,
)
from tools.types import ToolCall

__all__ = ["LenientCalls", "fenced_tool_code", "mentioned_call"]

_TAG_OPENERS: Final = tuple(f"<{w}>" for w in CALL_WRAPPERS if w != "tool_call")
_FUNCTION: Final = "<function="
_FUNCTION_OPEN: Final = re.compile(r"<function=([^<>\s\"']{1,64})>")
_FUNCTION_PARTIAL: Final = re.compile(r"<function=[^<>\s\"']{0,64}")
_CALL_FENCES: Final = frozenset({"", "json", "xml", "tool_call"})
_FENCE_LANGUAGE: Final = re.compile(r"^[ \t]*```[ \t]*([A-Za-z][\w+.\-]*)[ \t]*$", re.MULTILINE)
_UNFINISHED_NOTE: Final = (
    "ran {count} call(s) written as a bare JSON object instead of <tool_call> (it was not finished: {what})"
)
_FORMS: Final = {
    "fence": "a fenced code block",
    "function": "<function=NAME>",
    "bare": "a bare JSON object",
}


class _Region:
    """Text held because it may be a call, or (`passthrough`) code whose fence must be skipped whole."""

    __slots__ = (
        "body_start",
        "closer",
        "depth",
        "escape",
        "function",
        "in_string",
        "kind",
        "object_end",
        "passthrough",
        "text",
    )

    def __init__(self, kind: str, closer: str = "", function: str | None = None) -> None:
        self.kind = kind  # "tag", "fence", "function" or "bare"
        self.closer = closer
        self.function = function
        self.text = ""  # everything held, the opener included
        self.body_start: int | None = None  # where the body begins in `text`, once the opener is complete
        self.passthrough = False
        # bare objects: brace matching outside strings, and where the last complete object ended
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.object_end = 0


class LenientCalls:
    """Reads content text; passes plain text on and turns recognised call regions into calls."""

    def __init__(
        self,
        tool_names: Sequence[str],
        on_text: Callable[[str], None],
        on_calls: Callable[[list[ToolCall], str], None],
    ) -> None:
        self.tool_names = frozenset(tool_names)
        self.on_text = on_text
        self.on_calls = on_calls
        self._buf = ""
        self._region: _Region | None = None
        self._line_start = True  # the next character begins a line (or the answer)

    # -- input ------------------------------------------------------------------------------------------------
    def feed(self, text: str) -> None:
        self._buf += text
        self._run(final=False, at_end=False)

    def interrupt(self) -> None:
        """The scanner met a tag of its own: nothing held can continue across it."""
        self._run(final=True, at_end=False)
        self._line_start = False

    def finish(self) -> None:
        """The answer is over: resolve what is held."""
        self._run(final=True, at_end=True)

    # -- the machine ------------------------------------------------------------------------------------------
    def _run(self, *, final: bool, at_end: bool) -> None:
        while True:
            if self._region is not None:
                progressed = self._in_region(self._region, final=final, at_end=at_end)
            elif self._buf:
                progressed = self._in_plain(final=final)
            else:
                return
            if not progressed:
                return

    def _in_plain(self, *, final: bool) -> bool:
        """Pass plain text on up to the next region; False when the tail must wait for more text."""
        buf, i = self._buf, 0
        while i < len(buf):
            char = buf[i]
            if self._line_start and char in " \t":
                i += 1
                continue
            start = self._region_at(buf, i, final=final)
            if start is None:  # undecided: hold from here
                self._pass(buf[:i])
                self._buf = buf[i:]
                return False
            if start:
                self._pass(buf[:i])
                self._buf = buf[i:]
                return True
            self._line_start = char == "\n"
            i += 1
        self._pass(buf)
        self._buf = ""
        return True

    def _region_at(self, buf: str, i: int, *, final: bool) -> bool | None:
        """Whether a region opens at `buf[i]` (then it is set up), or None when more text must decide."""
        rest = buf[i : i + 80]
        if self._line_start and rest.startswith("{"):
            self._region = _Region("bare")
            return True
        if self._line_start and rest.startswith("`"):
            if rest.startswith("```"):
                self._region = _Region("fence", "```")
                return True
            return None if not final and len(rest) < 3 else False
        if not rest.startswith("<"):
            return False
        for opener in _TAG_OPENERS:
            if rest.startswith(opener):
                self._region = _Region("tag", f"</{opener[1:]}")
                return True
        match = _FUNCTION_OPEN.match(rest)
        if match is not None:
            if match.group(1) not in self.tool_names:
                return False
            self._region = _Region("function", "</function>", function=match.group(1))
            return True
        if final:
            return False
        if _FUNCTION_PARTIAL.fullmatch(rest) or any(o.startswith(rest) for o in (*_TAG_OPENERS, _FUNCTION)):
            return None
        return False

    def _in_region(self, region: _Region, *, final: bool, at_end: bool) -> bool:
        """Take held text into `region`; True when the region was settled and scanning goes on."""
        if region.kind == "bare":
            return self._in_bare(region, final=final, at_end=at_end)
        region.text += self._buf
        self._buf = ""
        if region.body_start is None and not self._find_body(region):
            if final:
                self._release(region, "")
            return final
        start = region.body_start or 0
        end = region.text.find(region.closer, start)
        if region.passthrough:
            return self._pass_code(region, start, end, final=final)
        if end < 0:
            if final:
                self._settle(region, region.text[start:], closed=False)
            return final
        tail = region.text[end + len(region.closer) :]
        region.text = region.text[: end + len(region.closer)]
        self._settle(region, region.text[start:end], closed=True)
        self._buf = tail
        return True

    @staticmethod
    def _find_body(region: _Region) -> bool:
        """Whether the opener is complete; sets where the body begins. A code fence becomes passthrough."""
        if region.kind != "fence":
            region.body_start = region.text.find(">") + 1
            return True
        newline = region.text.find("\n")
        if newline < 0:
            return False
        region.body_start = newline + 1
        region.passthrough = region.text[3:newline].strip().lower() not in _CALL_FENCES
        return True

    def _pass_code(self, region: _Region, start: int, end: int, *, final: bool) -> bool:
        """Code in another language goes on to the content as it comes, up to and with its closing fence."""
        if end >= 0 or final:
            cut = end + len(region.closer) if end >= 0 else len(region.text)
            self._pass(region.text[:cut])
            self._buf = region.text[cut:] + self._buf
            self._region = None
            self._line_start = False
            return True
        cut = max(start, len(region.text) - len(region.closer) + 1)  # a closer may be arriving
        self._pass(region.text[:cut])
        region.text = region.text[cut:]
        region.body_start = 0
        return False

    def _in_bare(self, region: _Region, *, final: bool, at_end: bool) -> bool:
        """A bare object: match its braces; once closed, only whitespace may follow it to the end."""
        text, self._buf = self._buf, ""
        for index, char in enumerate(text):
            if region.depth == 0 and region.object_end:
                if char == "{" and "\n" in region.text[region.object_end :]:
                    pass  # another object on a new line: several calls
                elif not char.isspace():
                    # Something follows the object: it was prose after all.
                    self._buf = text[index:]
                    self._release(region, "")
                    return True
            region.text += char
            self._track_braces(region, char)
        if final:
            if region.depth == 0 and region.object_end and at_end:
                self._settle(region, region.text, closed=True)
            elif not (at_end and self._settle_unfinished(region)):
                self._release(region, "")
            return True
        return False

    def _settle_unfinished(self, region: _Region) -> bool:
        """A bare call that ends the answer one step short of its end: a forgotten quote or closing braces.

        Qwen2.5-Coder-0.5B wrote `{"name": "python", "arguments": {"code": "sum(...)}}` (the quote before the
        braces forgotten) and `{"name": "python", "arguments": {"code": "..."}` (the last brace forgotten),
        then ended its turn (measured). The call is read with the quote, or the braces, added, when it then
        names an offered tool with an arguments object; otherwise the text stays content.
        """
        body = region.text.rstrip()
        if region.in_string:
            braces = len(body) - len(body.rstrip("}"))
            if braces < 2:
                return False
            repaired, what = (
                f'{body[:-braces]}"{body[-braces:]}',
                "a quote was added before the closing braces",
            )
        elif region.depth > 0 and body.endswith("}"):
            repaired, what = body + "}" * region.depth, "closing braces were added"
        else:
            return False
        calls = self._calls(region, repaired)
        if calls is None:
            return False
        self._region = None
        self._line_start = False
        self.on_calls(calls, _UNFINISHED_NOTE.format(count=len(calls), what=what))
        return True

    @staticmethod
    def _track_braces(region: _Region, char: str) -> None:
        if region.in_string:
            if region.escape:
                region.escape = False
            elif char == "\\":
                region.escape = True
            elif char == '"':
                region.in_string = False
            return
        if char == '"':
            region.in_string = True
        elif char in "{[":
            region.depth += 1
        elif char in "}]" and region.depth > 0:
            region.depth -= 1
            if region.depth == 0:
                region.object_end = len(region.text)

    # -- verdicts ---------------------------------------------------------------------------------------------
    def _settle(self, region: _Region, body: str, *, closed: bool) -> None:
        calls = self._calls(region, body)
        if calls is None:
            self._release(region, "")
            return
        self._region = None
        self._line_start = False
        form = _FORMS.get(region.kind) or f"a {region.text[: region.text.find('>') + 1]} block"
        note = f"ran {len(calls)} call(s) written as {form} instead of <tool_call>"
        if not closed:
            note += f" (the text ended before {region.closer})"
        self.on_calls(calls, note)

    def _release(self, region: _Region, more: str) -> None:
        """Not a call after all: the held text is content, as written."""
        self._region = None
        self._pass(region.text + more)
        self._line_start = region.text.endswith("\n")

    def _calls(self, region: _Region, body: str) -> list[ToolCall] | None:
        if region.kind == "function":
            return self._function_call(region.function or "", body)
        decoded = decode_block(body, body, closed=True)
        if not decoded.items or any(note.startswith("ignored text") for note in decoded.notes):
            return None
        if any(isinstance(item, MalformedCall) or item.name not in self.tool_names for item in decoded.items):
            return None
        calls = [item for item in decoded.items if isinstance(item, ToolCall)]
        return _without_repeats(calls) if region.kind == "bare" else calls

    @staticmethod
    def _function_call(name: str, body: str) -> list[ToolCall] | None:
        text = body.strip()
        if not text.startswith("{") or nesting_depth(text) > MAX_DEPTH:
            return None
        try:
            value, end, _python = decode_value(text, 0)
        except Exception:  # any failure means "not a call": the text stays content
            return None
        if not isinstance(value, dict) or text[end:].strip():
            return None
        return [ToolCall(name=name, arguments=clean_value(value))]

    def _pass(self, text: str) -> None:
        if text:
            self.on_text(text)


def _without_repeats(calls: list[ToolCall]) -> list[ToolCall]:
    """Bare call lines repeated one after the other are one call.

    Qwen2.5-Coder-0.5B wrote the same bare call line again and again (the in-process backend ends the turn at
    the first repeat): that is the model stuttering, not two requests, and running a call with side effects
    (appending to a file) twice would do its work twice.
    """
    kept: list[ToolCall] = []
    for call in calls:
        if not kept or (kept[-1].name, kept[-1].arguments) != (call.name, call.arguments):
            kept.append(call)
    return kept


def mentioned_call(content: str, tool_names: Sequence[str]) -> str | None:
    """The tool a call-like text in `content` names (`"name": "python"`, `function="python"`, `<python>`).

    For the loop's last line of defence: a turn whose visible text holds such a call was meant to act, so
    it must not end the run as a final answer, even when no reader could execute the call.
    """
    for name in tool_names:
        quoted = re.escape(name)
        patterns = (
            rf"""["']name["']\s*:\s*["']{quoted}["']""",
            rf"""function\s*=\s*["']?{quoted}(?![\w.\-])""",
            rf"<{quoted}>",
        )
        if any(re.search(pattern, content) for pattern in patterns):
            return name
    return None


def fenced_tool_code(content: str, tool_names: Sequence[str]) -> str | None:
    """The offered tool whose name labels a fenced code block in `content` (```` ```python ```` and a
    `python` tool), or None.

    Such a block is code shown, not a call: it is never run (nothing says the model meant to run it, nor with
    which arguments). The loop uses this to tell a model that shows code instead of running it, once, how to
    call the tool, rather than take the code for the final answer of a run in which no tool ran.
    """
    names = set(tool_names)
    for match in _FENCE_LANGUAGE.finditer(content):
        language = match.group(1).lower()
        if language in names:
            return language
    return None
