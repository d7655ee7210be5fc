"""`LlamaCppModel`: a GGUF model in-process with llama-cpp-python (extra `llama`).

Why a token loop of our own instead of `Llama.create_completion` (details in `_llama_generation`):

* **Constrained tool calls.** Reasoning and prose are sampled freely; the moment the model opens a call
  (`<tool_call>`, or one of the forms real models write instead) sampling switches to a llama.cpp grammar
  built from the tools' JSON Schemas, which also writes the call's closer, then back to free sampling.
* **tool_choice.** "none" bans the call opener after the reasoning; "required" or a tool name makes the
  backend open the call itself right after the reasoning, then lets the model choose only between another
  call and the end of its turn.
* **Thinking budget.** When the reasoning reaches the cap, the backend writes the closing sentence from
  `prompts` (note `thinking_budget`) and `</think>`, and the model goes on to answer or call.
* **KV reuse by text** (`_llama_cache`): a step evaluates only the tokens the previous prompt did not have.
* **Each model's own chat format** (`chat_formats`): QwQ-32B's exact format, or the GGUF's template.

The parts of llama-cpp-python this uses sit behind `_llama_runtime.LlamaRuntime`, which also loads quantized
models safely on CPUs with AMX (`extra_buffer_types`). Generation runs in a worker thread and streams text
to the event loop (`_threaded`); closing the stream stops the worker at the next token.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.models._llama_cache import KVCache
from agent.models._llama_generation import (
    Generation,
    GenerationJob,
    GenerationSettings,
    LlamaStats,
    VocabInfo,
    call_seed,
)
from agent.models._llama_runtime import LlamaRuntime, LoadOptions
from agent.models._threaded import Sink, stream_from_thread
from agent.models._turns import ToolChoice, effective_thinking_budget
from agent.models.base import ModelChunk, ModelRequest
from agent.models.chat_formats import ChatFormat, ChatFormatChoice, opens_thinking, resolve_chat_format
from agent.models.errors import ModelConfigurationError
from agent.models.sampling import SamplingConfig

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["LlamaCppModel", "LlamaStats"]

_SAMPLING_FIELDS = frozenset(f.name for f in fields(SamplingConfig))


class LlamaCppModel:
    """QwQ-32B (or any GGUF chat model) in-process, with constrained tool calls and KV-cache reuse.

    Sampling defaults to QwQ-32B's recommendation (`SamplingConfig`); pass `sampling=SamplingConfig(...)`,
    or its fields as keywords (`temperature=0.7`). Nothing is loaded until the first call (or `load()`); the
    loaded model is kept so that its KV cache carries over from step to step.

    `chat_format`: "auto" (the GGUF's template decides, see `agent.models.chat_formats`), "qwq" (always
    QwQ-32B's format) or "template" (always the GGUF's own template). `render_prompt()` shows the result.
    `extra_buffer_types`: llama.cpp's repacked weight layouts; None decides from the CPU (off where it has
    AMX, on which they crash llama-cpp-python 0.3.36 with quantized models).
    `yarn=True` enables YaRN rope scaling (factor 4 over 32,768 original positions) for contexts beyond 32k.
    `max_string_length` caps strings inside constrained calls (for noise models; leave None for real ones).
    `logit_bias` adds to the logits of free (unconstrained) sampling, keyed by token id or by the text of a
    single token (`{"<|im_end|>": 5.0}`), as the OpenAI API's parameter does.
    Other keyword arguments go to `llama_cpp.Llama` as they are. What loading uses is kept together in
    `load_options` (`LoadOptions`); what generation uses stays on the model. After each call `last_stats`
    says what the KV cache served and what was evaluated; `reset_cache()` forgets the cache, `close()` frees
    the model.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        llama: Llama | None = None,
        n_ctx: int = 32768,
        n_gpu_layers: int = -1,
        n_threads: int | None = None,
        n_batch: int = 512,
        seed: int | None = None,
        max_tokens: int = 16384,
        thinking_budget: int | None = None,
        sampling: SamplingConfig | None = None,
        chat_format: ChatFormatChoice = "auto",
        extra_buffer_types: bool | None = None,
        yarn: bool = False,
        yarn_factor: float = 4.0,
        yarn_original_context: int = 32768,
        constrain_tool_calls: bool = True,
        max_string_length: int | None = None,
        logit_bias: Mapping[int | str, float] | None = None,
        verbose: bool = False,
        **llama_kwargs: Any,
    ) -> None:
        if llama is None and model_path is None:
            raise ValueError("give model_path (a GGUF file) or llama (a loaded llama_cpp.Llama)")
        if model_path is not None and not Path(model_path).is_file():
            raise FileNotFoundError(
                f"no GGUF file at {model_path}; download one (e.g. Qwen/QwQ-32B-GGUF) or use "
                "LlamaCppModel.from_pretrained(repo_id, filename) where Hugging Face is reachable"
            )
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if chat_format not in ("auto", "qwq", "template"):
            raise ValueError(f"chat_format must be 'auto', 'qwq' or 'template'; got {chat_format!r}")
        overrides = {k: llama_kwargs.pop(k) for k in list(llama_kwargs) if k in _SAMPLING_FIELDS}
        self.sampling = (sampling or SamplingConfig()).with_(**overrides)
        self.model_path = str(model_path) if model_path is not None else None
        self.load_options = LoadOptions(
            n_ctx=n_ctx,
            n_gpu_layers=n_gpu_layers,
            n_batch=n_batch,
            n_threads=n_threads,
            seed=seed,
            yarn=(yarn_factor, yarn_original_context) if yarn else None,
            extra_buffer_types=extra_buffer_types,
            verbose=verbose,
            llama_kwargs=llama_kwargs,
        )
        self.seed = seed  # also the base of each call's sampling seed
        self.max_tokens = max_tokens
        self.thinking_budget = thinking_budget
        self.chat_format_choice: ChatFormatChoice = chat_format
        self.constrain_tool_calls = constrain_tool_calls
        self.max_string_length = max_string_length
        self.logit_bias = dict(logit_bias or {})
        self.last_stats = LlamaStats()
        self._given = llama
        self._runtime: LlamaRuntime | None = None
        self._cache: KVCache | None = None
        self._vocab: VocabInfo | None = None
        self._format: ChatFormat | None = None
        self._lock = threading.Lock()
        self._calls = 0

    def __repr__(self) -> str:
        return f"LlamaCppModel(model_path={self.model_path!r}, n_ctx={self.load_options.n_ctx}, chat_format={self.chat_format_choice!r})"

    # -- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, repo_id: str, filename: str | None = None, *, cache_dir: str | None = None, **kwargs: Any
    ) -> LlamaCppModel:
        """Fetch a GGUF from a Hugging Face repository (or its local cache) and wrap it; loading stays lazy.

        `filename` may be a glob (`*q4_k_m.gguf`). Without network, a cached file is used; otherwise a
        `ModelConfigurationError` says how to proceed.
        """
        try:
            import huggingface_hub
        except ImportError as exc:
            raise ModelConfigurationError(
                "loading from a Hugging Face repository needs huggingface_hub: pip install huggingface_hub"
            ) from exc
        name = filename or "*.gguf"
        try:
            if any(ch in name for ch in "*?["):
                import fnmatch

                files = huggingface_hub.list_repo_files(repo_id)
                matches = sorted(f for f in files if fnmatch.fnmatch(f, name))
                if not matches:
                    raise ModelConfigurationError(f"no file in {repo_id} matches {name!r}")
                name = matches[0]
            cached = huggingface_hub.try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            path = (
                cached
                if isinstance(cached, str)
                else huggingface_hub.hf_hub_download(repo_id, name, cache_dir=cache_dir)
            )
        except ModelConfigurationError:
            raise
        except Exception as exc:
            raise ModelConfigurationError(
                f"cannot fetch {repo_id}/{name} from Hugging Face ({type(exc).__name__}: {exc}). Without "
                "network, download the GGUF elsewhere and pass its path: LlamaCppModel(model_path=...)"
            ) from exc
        return cls(model_path=path, **kwargs)

    def load(self) -> Llama:
        """Load the model now (otherwise the first call does it, off the event loop)."""
        with self._lock:
            return self._ensure_loaded().llama

    @property
    def llama(self) -> Llama | None:
        """The loaded `llama_cpp.Llama`, or None before the first call."""
        return self._runtime.llama if self._runtime is not None else None

    @property
    def runtime(self) -> LlamaRuntime | None:
        """The adapter around the loaded model (tokenizer, metadata), or None before the first call."""
        return self._runtime

    @property
    def chat_format(self) -> ChatFormat:
        """The chat format in use (loads the model to read its template)."""
        with self._lock:
            self._ensure_loaded()
            assert self._format is not None
            return self._format

    async def turn_opens_thinking(self) -> bool:
        """Whether this model's turns start inside its reasoning (loads the model, off the event loop)."""
        import asyncio

        return await asyncio.to_thread(lambda: self.chat_format.opens_thinking())

    def render_prompt(self, messages: Sequence[Any], tools: Sequence[Any] | None = None, **kw: Any) -> str:
        """Exactly the text the model receives for `messages` and `tools` (loads the model if needed).

        `keep_thinking` may be given as for a request; it applies to QwQ-32B's format only.
        """
        return self.chat_format.render(
            messages, list(tools or ()), keep_thinking=kw.get("keep_thinking", "none")
        )

    def reset_cache(self) -> None:
        """Forget the KV cache: the next call evaluates its whole prompt (benchmarks use it for cold runs)."""
        with self._lock:
            if self._cache is not None:
                self._cache.clear()
            if self._runtime is not None:
                self._runtime.reset()

    def close(self) -> None:
        """Free the model and its KV cache."""
        with self._lock:
            if self._runtime is not None:
                self._runtime.close()
            self._runtime = self._cache = self._vocab = self._format = None
            self._given = None

    async def aclose(self) -> None:
        import asyncio

        await asyncio.to_thread(self.close)

    def _ensure_loaded(self) -> LlamaRuntime:
        if self._runtime is None:
            self._runtime = self._open_runtime()
        rt = self._runtime
        if self._cache is None:
            self._cache = KVCache(rt)
        if self._vocab is None:
            try:
                self._vocab = VocabInfo.scan(rt, self.logit_bias)
            except ValueError as exc:
                raise ModelConfigurationError(str(exc)) from exc
        if self._format is None:
            self._format = self._resolve_format(rt)
        return rt

    def _open_runtime(self) -> LlamaRuntime:
        if self._given is not None:
            return LlamaRuntime(self._given)
        try:
            import llama_cpp  # noqa: F401
        except ImportError as exc:
            raise ModelConfigurationError(
                "LlamaCppModel needs llama-cpp-python: pip install 'qwq-agent[llama]'"
            ) from exc
        try:
            return LlamaRuntime.load(str(self.model_path), self.load_options)
        except (ValueError, RuntimeError) as exc:
            raise ModelConfigurationError(f"llama.cpp could not load {self.model_path}: {exc}") from exc

    def _resolve_format(self, rt: LlamaRuntime) -> ChatFormat:
        variables = {"bos_token": rt.token_text("bos"), "eos_token": rt.token_text("eos")}
        try:
            return resolve_chat_format(self.chat_format_choice, rt.chat_template, variables=variables)
        except ValueError as exc:
            raise ModelConfigurationError(str(exc)) from exc

    # -- CountsTokens: what agent.context asks before each request -------------------------------------------
    async def context_window(self) -> int:
        """Tokens the context holds: the loaded (or given) model's, else the `n_ctx` it will be loaded with."""
        if self._runtime is not None:
            return self._runtime.n_ctx
        if self._given is not None:
            return int(self._given.n_ctx())
        return self.load_options.n_ctx

    async def count_prompt_tokens(self, request: ModelRequest) -> int:
        """The exact token count of the prompt `stream` would evaluate for `request` (loads the model)."""
        import asyncio

        def count() -> int:
            with self._lock:
                rt = self._ensure_loaded()
                assert self._format is not None
                prompt = self._format.render(
                    request.messages, request.tools, keep_thinking=request.keep_thinking
                )
                return len(rt.tokenize(prompt.encode("utf-8")))

        return await asyncio.to_thread(count)

    # -- the Model protocol ----------------------------------------------------------------------------------
    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        choice = ToolChoice.of(request.tool_choice).without_tools(bool(request.tools))
        if choice.only is not None and not any(
            getattr(t, "name", None) == choice.only for t in request.tools
        ):
            raise ModelConfigurationError(f"tool_choice names {choice.only!r}, which is not among the tools")
        budget = effective_thinking_budget(request.thinking_budget, self.thinking_budget)
        max_tokens = request.max_tokens or self.max_tokens

        def work(sink: Sink) -> ModelChunk | None:
            with self._lock:
                if sink.stop.is_set():
                    return None
                rt = self._ensure_loaded()
                assert self._cache is not None
                assert self._vocab is not None
                assert self._format is not None
                prompt = self._format.render(
                    request.messages, request.tools, keep_thinking=request.keep_thinking
                )
                job = GenerationJob(
                    prompt=prompt,
                    tools=list(request.tools),
                    tool_choice=choice,
                    max_tokens=max_tokens,
                    thinking_budget=budget,
                    opened_think=opens_thinking(prompt),
                    stop=sink.stop.is_set,
                )
                sink.chunk(ModelChunk(opens_thinking=job.opened_think))
                self._calls += 1
                settings = GenerationSettings(
                    sampling=self.sampling,
                    seed=call_seed(self.seed, self._calls),
                    constrain=self.constrain_tool_calls,
                    max_string_length=self.max_string_length,
                )
                generation = Generation(rt, self._cache, self._vocab, job, settings, sink.text)
                finish = generation.run()
                self.last_stats = generation.stats
            if finish == "cancelled":
                return None
            return self._last_chunk(generation.stats, finish)

        async for chunk in stream_from_thread(work, name="llamacpp-generate"):
            yield chunk

    @staticmethod
    def _last_chunk(stats: LlamaStats, finish: str) -> ModelChunk:
        return ModelChunk(
            usage=stats.usage(),
            finish_reason=finish,
            extra={
                "evaluated_prompt_tokens": stats.evaluated_tokens,
                "injected_tokens": stats.injected_tokens,
                "thinking_tokens": stats.thinking_tokens,
            },
        )
