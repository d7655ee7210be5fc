"""The OpenTelemetry side of `agent.telemetry`; imported only when a run is traced (it imports the SDK API).

Spans are parented explicitly (`context=` at creation) rather than through the current context: the loop is an
async generator, and a context attached inside it would leak into whatever code consumes its events. Only a
tool call's span is made current, inside the task that runs the call, so spans the tool itself opens (an
instrumented HTTP client, say) nest under it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from agent.models.base import ModelChunk, ModelRequest
from agent.telemetry import RunTrace, WorkflowSpan
from tools.types import ToolCall, ToolResult

__all__ = ["OtelRunTrace", "otel_workflow"]

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
_VERSION = "0.1.0"


def _tracer(provider: Any) -> trace.Tracer:
    tracer: trace.Tracer = provider.get_tracer("qwq-agent", _VERSION, schema_url=SCHEMA_URL)
    return tracer


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


# ----------------------------------------------------------------------------- what a model is


def model_attributes(model: Any) -> dict[str, Any]:
    """GenAI request attributes of a backend, read from its public settings (whatever it has of them)."""
    kind = type(model).__name__
    attributes: dict[str, Any] = {}
    if kind == "OpenAICompatModel":
        attributes["gen_ai.provider.name"] = "openai"  # the API spoken; server.address says who answers
        parts = urlsplit(str(getattr(model, "base_url", "")))
        if parts.hostname:
            attributes["server.address"] = parts.hostname
            attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        name = getattr(model, "model", None)
    elif kind == "LlamaCppModel":
        attributes["gen_ai.provider.name"] = "llama.cpp"
        path = getattr(model, "model_path", None)
        name = Path(path).name if path else "llama.cpp"
    elif kind == "ScriptedModel":
        attributes["gen_ai.provider.name"] = "qwq_agent.scripted"
        name = "scripted"
    else:
        attributes["gen_ai.provider.name"] = kind
        name = getattr(model, "model", None) or getattr(model, "model_name", None)
    if isinstance(name, str) and name:
        attributes["gen_ai.request.model"] = name
    for setting, key in (
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("top_k", "gen_ai.request.top_k"),
        ("presence_penalty", "gen_ai.request.presence_penalty"),
        ("seed", "gen_ai.request.seed"),
        ("max_tokens", "gen_ai.request.max_tokens"),
    ):
        value = getattr(model, setting, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[key] = value
    return attributes


def operation_of(model: Any) -> str:
    """`chat` for chat APIs; `text_completion` for backends that complete the rendered QwQ prompt."""
    return "chat" if getattr(model, "mode", None) == "chat" else "text_completion"


# ----------------------------------------------------------------------------- content, when captured


def message_parts(message: Any) -> dict[str, Any]:
    """One history message in the GenAI conventions' message shape (role and typed parts)."""
    role = getattr(message, "role", "user")
    if role == "tool":
        part = {"type": "tool_call_response", "id": message.tool_call_id or None, "response": message.content}
        return {"role": "tool", "parts": [part]}
    parts: list[dict[str, Any]] = []
    if getattr(message, "thinking", ""):
        parts.append({"type": "reasoning", "content": message.thinking})
    if getattr(message, "content", ""):
        parts.append({"type": "text", "content": message.content})
    for call in getattr(message, "tool_calls", ()):
        parts.append(
            {"type": "tool_call", "id": call.id or None, "name": call.name, "arguments": call.arguments}
        )
    return {"role": role, "parts": parts}


def input_attributes(messages: Sequence[Any]) -> dict[str, str]:
    """`gen_ai.system_instructions` and `gen_ai.input.messages` for a history."""
    system = [m for m in messages if getattr(m, "role", "") == "system"]
    rest = [m for m in messages if getattr(m, "role", "") != "system"]
    attributes = {"gen_ai.input.messages": _json([message_parts(m) for m in rest])}
    if system:
        attributes["gen_ai.system_instructions"] = _json(
            [{"type": "text", "content": m.content} for m in system]
        )
    return attributes


def output_messages(text: str, finish_reason: str | None) -> str:
    """The completion as one assistant message: reasoning, visible text and calls as separate parts."""
    from agent.parsing import parse_completion

    completion = parse_completion(text)
    parts: list[dict[str, Any]] = []
    if completion.thinking:
        parts.append({"type": "reasoning", "content": completion.thinking})
    if completion.content:
        parts.append({"type": "text", "content": completion.content})
    for call in completion.tool_calls:
        parts.append({"type": "tool_call", "name": call.name, "arguments": call.arguments})
    return _json([{"role": "assistant", "parts": parts, "finish_reason": finish_reason or "stop"}])


# ----------------------------------------------------------------------------- the run


def _fail(span: Span, error_type: str, description: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, description))


def _fail_with(span: Span, exc: BaseException) -> None:
    """Mark `span` failed by `exc`; a closed generator counts as cancelled and has no exception to record."""
    if not isinstance(exc, GeneratorExit):
        span.record_exception(exc)
    _fail(span, _exception_type(exc), f"{type(exc).__name__}: {exc}")


def _exception_type(exc: BaseException) -> str:
    import asyncio

    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return type(exc).__qualname__


class OtelRunTrace(RunTrace):
    """Spans of one run: the run span, the open step span, and the open model span of that step."""

    def __init__(self, provider: Any, agent: Any, state: Any) -> None:
        self.tracer = _tracer(provider)
        self.capture = bool(getattr(agent, "capture_content", False))
        self.model = agent.model
        self.operation = operation_of(agent.model)
        self.model_attributes = model_attributes(agent.model)
        self.descriptions = {t.name: t.description for t in agent.toolbox.tools}
        self.run_id = str(state.run_id)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.conversation.id": self.run_id,
            **{k: v for k, v in self.model_attributes.items() if not k.startswith("server.")},
        }
        if self.capture:
            attributes.update(input_attributes(state.messages))
        # parent: whatever is current where the run starts (a workflow span, the application's own span)
        self.span = self.tracer.start_span("invoke_agent", kind=SpanKind.INTERNAL, attributes=attributes)
        self.step_span: Span | None = None
        self.step_tool_calls = 0
        self.model_span: Span | None = None

    def _in(self, span: Span | None) -> otel_context.Context:
        return trace.set_span_in_context(span or self.span)

    # -- steps

    def _end_step(self) -> None:
        if self.step_span is not None:
            self.step_span.set_attribute("qwq_agent.tool_calls", self.step_tool_calls)
            self.step_span.end()
            self.step_span = None

    def start_step(self, step: int) -> None:
        self._end_step()
        self.step_tool_calls = 0
        self.step_span = self.tracer.start_span(
            f"step {step}",
            context=self._in(self.span),
            kind=SpanKind.INTERNAL,
            attributes={
                "qwq_agent.step": step,
                "gen_ai.conversation.id": self.run_id,
                # Phoenix shows spans without a GenAI operation as "unknown"; a step is a chain of calls
                "openinference.span.kind": "CHAIN",
            },
        )

    # -- the model request

    def model_stream(
        self, stream: AsyncIterator[ModelChunk], request: ModelRequest
    ) -> AsyncIterator[ModelChunk]:
        return self._traced_stream(stream, request)

    async def _traced_stream(
        self, stream: AsyncIterator[ModelChunk], request: ModelRequest
    ) -> AsyncIterator[ModelChunk]:
        span = self._start_model_span(request)
        self.model_span = span
        seen = _StreamSeen(started=time.monotonic())
        try:
            async for chunk in stream:
                seen.take(chunk, keep_text=self.capture)
                yield chunk
        except BaseException as exc:
            if span.is_recording():
                _fail_with(span, exc)
            raise
        finally:
            self._end_model_span(span, seen)

    def _start_model_span(self, request: ModelRequest) -> Span:
        attributes = {
            "gen_ai.operation.name": self.operation,
            "gen_ai.conversation.id": self.run_id,
            "gen_ai.request.stream": True,
            **self.model_attributes,
        }
        if request.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_tokens
        if self.capture:
            attributes.update(input_attributes(request.messages))
            attributes["gen_ai.tool.definitions"] = _json([t.to_openai() for t in request.tools])
        name = f"{self.operation} {attributes.get('gen_ai.request.model', '')}".strip()
        remote = "server.address" in attributes
        return self.tracer.start_span(
            name,
            context=self._in(self.step_span),
            kind=SpanKind.CLIENT if remote else SpanKind.INTERNAL,
            attributes=attributes,
        )

    def _end_model_span(self, span: Span, seen: _StreamSeen) -> None:
        if seen.reported:
            span.set_attribute("gen_ai.usage.input_tokens", seen.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", seen.completion_tokens)
            if seen.cached_tokens:
                span.set_attribute("gen_ai.usage.cache_read.input_tokens", seen.cached_tokens)
        if seen.first is not None:
            span.set_attribute("gen_ai.response.time_to_first_chunk", seen.first)
        if seen.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [seen.finish_reason])
        response_model = getattr(self.model, "model", None)
        if isinstance(response_model, str) and response_model:
            span.set_attribute("gen_ai.response.model", response_model)
        if self.capture:
            span.set_attribute(
                "gen_ai.output.messages", output_messages("".join(seen.text), seen.finish_reason)
            )
        if self.model_span is span:
            self.model_span = None
            span.end()

    # -- tool calls

    async def tool_call(self, call: ToolCall, running: Awaitable[ToolResult]) -> ToolResult:
        self.step_tool_calls += 1
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.name,
            "gen_ai.tool.type": "function",
        }
        if call.id:
            attributes["gen_ai.tool.call.id"] = call.id
        if call.name in self.descriptions:
            attributes["gen_ai.tool.description"] = self.descriptions[call.name]
        if self.capture:
            attributes["gen_ai.tool.call.arguments"] = _json(call.arguments)
        span = self.tracer.start_span(
            f"execute_tool {call.name}",
            context=self._in(self.step_span),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
        )
        # current inside this call's own task only: spans the tool opens nest under this one
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            result = await running
        except BaseException as exc:
            _fail_with(span, exc)
            raise
        else:
            if result.is_error:
                first_line = result.content.strip().splitlines()[0] if result.content.strip() else ""
                _fail(span, "tool_error", first_line[:200])
            if self.capture:
                span.set_attribute("gen_ai.tool.call.result", result.content)
            return result
        finally:
            otel_context.detach(token)
            span.end()

    # -- the end of the run

    def end(self, state: Any, exc: BaseException | None) -> None:
        """Close what is still open (a step cut short by a timeout, say), then the run span with its outcome."""
        if self.model_span is not None:
            span, self.model_span = self.model_span, None
            _fail(span, "interrupted", "the run ended before the model's answer did")
            span.end()
        self._end_step()
        span = self.span
        usage = getattr(state, "usage", None)
        if usage is not None:
            # The run's totals go under our own names: trace UIs (Phoenix) add gen_ai.usage up over a subtree,
            # so repeating the model spans' counts here would show every token twice.
            span.set_attribute("qwq_agent.usage.input_tokens", int(usage.prompt_tokens))
            span.set_attribute("qwq_agent.usage.output_tokens", int(usage.completion_tokens))
            if usage.cached_tokens:
                span.set_attribute("qwq_agent.usage.cache_read.input_tokens", int(usage.cached_tokens))
        span.set_attribute("qwq_agent.steps", int(state.steps))
        span.set_attribute("qwq_agent.tool_calls", int(state.tool_calls))
        stop = state.stop_reason
        if exc is not None and stop is None:
            _fail_with(span, exc)
        elif stop is not None:
            reason = str(getattr(stop, "value", stop))
            span.set_attribute("qwq_agent.stop_reason", reason)
            span.set_attribute("gen_ai.response.finish_reasons", [reason])
            if reason != "final_answer":
                detail = str(getattr(state, "detail", "") or "")
                _fail(span, reason, f"stopped by {reason}" + (f": {detail}" if detail else ""))
            if self.capture:
                span.set_attribute(
                    "gen_ai.output.messages",
                    _json(
                        [
                            {
                                "role": "assistant",
                                "parts": [{"type": "text", "content": state.answer}],
                                "finish_reason": reason,
                            }
                        ]
                    ),
                )
        span.end()


# ----------------------------------------------------------------------------- many runs under one span


class _OtelWorkflow(WorkflowSpan):
    def __init__(self, span: Span) -> None:
        self.span = span

    def set(self, key: str, value: str | int | float | bool) -> None:
        self.span.set_attribute(key, value)


@contextmanager
def otel_workflow(provider: Any, name: str, attributes: Mapping[str, Any]) -> Iterator[WorkflowSpan]:
    tracer = _tracer(provider)
    span = tracer.start_span(
        f"invoke_workflow {name}",
        kind=SpanKind.INTERNAL,
        attributes={"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": name, **attributes},
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield _OtelWorkflow(span)
    except BaseException as exc:
        _fail_with(span, exc)
        raise
    finally:
        otel_context.detach(token)
        span.end()


@dataclass
class _StreamSeen:
    """What a model stream reported, gathered chunk by chunk for its span."""

    started: float
    first: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reported: bool = False
    finish_reason: str | None = None
    text: list[str] = field(default_factory=list)

    def take(self, chunk: ModelChunk, *, keep_text: bool) -> None:
        if self.first is None and chunk.text:
            self.first = time.monotonic() - self.started
        if chunk.usage is not None:
            self.reported = True
            self.prompt_tokens += chunk.usage.prompt_tokens
            self.completion_tokens += chunk.usage.completion_tokens
            self.cached_tokens += chunk.usage.cached_tokens
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if keep_text and chunk.text:
            self.text.append(chunk.text)
