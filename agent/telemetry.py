"""OpenTelemetry traces of agent runs, after the OpenTelemetry GenAI semantic conventions.

Each run is one `invoke_agent` span; under it one `step N` span per model turn, and under each step the model
request (`text_completion MODEL`, or `chat MODEL` for a chat API) and one `execute_tool NAME` span per call.
Token usage, the model, tool names and call ids, the stop reason and errors (as span status and `error.type`)
are attributes. Prompt, completion, arguments and tool output are recorded only with `capture_content=True`,
because they may be sensitive. `workflow(...)` opens one parent span for many runs (`eval`, `batch`).

Tracing is on when any of these holds, in this order:
1. `Agent(..., tracer_provider=provider)` names a provider;
2. the application set a global provider (`opentelemetry.trace.set_tracer_provider`, e.g. via Logfire);
3. `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set: spans go there over OTLP/HTTP, batched,
   flushed at exit; `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` apply as usual.
`OTEL_SDK_DISABLED=true` turns 2 and 3 off. Otherwise this module returns a shared null object whose hooks do
nothing, and `opentelemetry` is never imported (the SDK lives in the `otel` extra).

The loop calls four hooks, all on the object `trace_run` yields: `start_step`, `model_stream` (wraps the
model's chunk stream), `tool_call` (wraps one call's coroutine), and the end of the `with` block.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.models.base import ModelChunk, ModelRequest
    from tools.types import ToolCall, ToolResult

__all__ = [
    "ENDPOINT_VARIABLES",
    "RunTrace",
    "TelemetryWarning",
    "WorkflowSpan",
    "enabled",
    "trace_run",
    "workflow",
]

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class TelemetryWarning(UserWarning):
    """Tracing was asked for through the environment but cannot be set up (the message says why)."""


class RunTrace:
    """The hooks the loop calls during one run. This base class is the null object: every hook does nothing
    (and `model_stream` hands the stream back unwrapped), which is all an untraced run pays."""

    def start_step(self, step: int) -> None:
        """A new step begins (the previous one, if any, has ended)."""

    def model_stream(
        self, stream: AsyncIterator[ModelChunk], request: ModelRequest
    ) -> AsyncIterator[ModelChunk]:
        """The model's chunk stream for this step, as the loop iterates it."""
        return stream

    async def tool_call(self, call: ToolCall, running: Awaitable[ToolResult]) -> ToolResult:
        """Await one tool call (`running`, e.g. `toolbox.call(call)`) and return its result."""
        return await running


class WorkflowSpan:
    """What `workflow` yields: `set` records an attribute on the parent span (nothing when untraced)."""

    def set(self, key: str, value: str | int | float | bool) -> None:
        """Record `key=value` on the span."""


NULL_TRACE = RunTrace()
NULL_WORKFLOW = WorkflowSpan()

_env_provider: Any = None
_env_failed = False


def _global_provider() -> Any:
    """The application's global provider, if it set one; only looked at when opentelemetry is already loaded."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider


def _provider_from_environment() -> Any:
    """One provider per process for `OTEL_EXPORTER_OTLP_ENDPOINT`, exporting over OTLP/HTTP in batches."""
    global _env_provider, _env_failed
    if _env_provider is not None or _env_failed:
        return _env_provider
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        _env_failed = True
        variable = next(v for v in ENDPOINT_VARIABLES if os.environ.get(v))
        warnings.warn(
            f"{variable} is set but OpenTelemetry is not installed, so runs are not traced; "
            "install it with: pip install 'qwq-agent[otel]'",
            TelemetryWarning,
            stacklevel=4,
        )
        return None
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; they win over this default.
    defaults = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "qwq-agent"}
    provider = TracerProvider(resource=Resource.create(defaults))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _env_provider = provider
    return provider


def resolve_provider(explicit: Any = None) -> Any:
    """The tracer provider runs should use, or None when tracing is off (see the module docstring)."""
    if explicit is not None:
        return explicit
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    provider = _global_provider()
    if provider is not None:
        return provider
    if any(os.environ.get(v) for v in ENDPOINT_VARIABLES):
        return _provider_from_environment()
    return None


def enabled(tracer_provider: Any = None) -> bool:
    """Whether runs would be traced (with this explicit provider, or from the environment)."""
    return resolve_provider(tracer_provider) is not None


@contextmanager
def trace_run(agent: Any, state: Any) -> Iterator[RunTrace]:
    """Trace one run of `agent` for the duration of the block; `state` is the loop's run state.

    The run span's parent is the span current when the block is entered (a `workflow`, or the application's
    own span). At the end of the block the span takes the outcome from `state` (stop reason, usage, steps),
    or the exception that left the block.
    """
    provider = resolve_provider(getattr(agent, "tracer_provider", None))
    if provider is None:
        yield NULL_TRACE
        return
    from agent._otel import OtelRunTrace

    run = OtelRunTrace(provider, agent, state)
    try:
        yield run
    except BaseException as exc:
        run.end(state, exc)
        raise
    run.end(state, None)


@contextmanager
def workflow(
    name: str,
    *,
    tracer_provider: Any = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[WorkflowSpan]:
    """One parent span (`invoke_workflow NAME`) for all the runs started inside the block.

    It becomes the current span for the block, so runs started inside it, also in tasks and in
    `asyncio.run`, nest under it. Use it around synchronous code or inside one coroutine, not across the
    `yield` of a generator.
    """
    provider = resolve_provider(tracer_provider)
    if provider is None:
        yield NULL_WORKFLOW
        return
    from agent._otel import otel_workflow

    with otel_workflow(provider, name, attributes or {}) as span:
        yield span
