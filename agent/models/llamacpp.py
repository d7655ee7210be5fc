"""`LlamaCppModel`: QwQ-32B in-process with llama-cpp-python, from a GGUF file (extra `llama`).

Why a token loop of our own instead of `Llama.create_completion`:

* **Constrained tool calls.** Reasoning and prose are sampled freely; the moment the model writes
  `<tool_call>` (after its reasoning closed) sampling switches to a llama.cpp grammar built from the tools'
  JSON Schemas (`agent.models.grammar`) that also writes the closing `\\n</tool_call>`, then back to free
  sampling. One persistent sampler chain per phase (llama.cpp's `llama_sampler_sample` accepts the sampled
  token into the chain, so the grammar advances with the text).
* **tool_choice.** "none" bans the `<tool_call>` token after the reasoning; "required" or a tool name makes
  the backend write `\\n\\n<tool_call>` right after `</think>` and, after each call, lets the model choose only
  between another call and the end of its turn.
* **Thinking budget.** When the reasoning reaches the cap, the backend writes the closing sentence from
  `prompts` (note `thinking_budget`) and `\\n</think>\\n\\n`, and the model goes on to answer or call.
* **KV reuse by text.** The cache is bookkept as (token, bytes) pairs. A new prompt reuses the longest run of
  cached tokens whose bytes spell its beginning, and only the rest is tokenized and evaluated. Matching on
  text rather than on re-tokenized ids matters: a model's sampled tokens are often not what the tokenizer
  would produce for the same text (always so for the noise test model), so `Llama.generate`'s token-id
  prefix match would re-evaluate most of every generated turn. With `keep_thinking="current_task"` each
  prompt extends the previous prompt plus the generated text, so a step evaluates only its new tokens.

Generation runs in a worker thread (llama.cpp releases the GIL in decode) and streams text to the event loop
through an `asyncio.Queue`; closing the stream stops the worker at the next token.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.models.base import ModelChunk, ModelRequest, Usage
from agent.models.errors import ContextLengthError, ModelConfigurationError, ModelError
from agent.models.grammar import CALL_CLOSE, tool_call_gbnf

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["LlamaCppModel", "LlamaStats"]

THINK_OPEN = "<think>\n"
THINK_CLOSE = "</think>"
CALL_OPEN = "<tool_call>"
RESPONSE_OPEN = "<tool_response>"
_END = object()
_FLUSH_INTERVAL = 0.02  # seconds between deliveries of streamed text to the event loop


@dataclass
class LlamaStats:
    """What the last call did with the KV cache and the sampler; benchmarks and tests read it."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    evaluated_tokens: int = 0
    completion_tokens: int = 0
    injected_tokens: int = 0
    thinking_tokens: int = 0
    tool_calls: int = 0
    finish_reason: str = ""
    grammar_tokens: int = 0
    repaired_tokens: int = 0
    grammar_fast_tokens: int = 0
    texts: list[str] = field(default_factory=list)


@dataclass
class _Job:
    prompt: str
    tools: Sequence[Any]
    tool_choice: str
    max_tokens: int
    thinking_budget: int | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[object]
    stop: threading.Event = field(default_factory=threading.Event)


class LlamaCppModel:
    """QwQ-32B (or any Qwen2-family GGUF) in-process, with constrained tool calls and KV-cache reuse.

    The defaults are QwQ-32B's recommended sampling (design.md section 4). Nothing is loaded until the first
    call (or `load()`); the loaded `Llama` is kept so that its KV cache carries over from step to step.
    `yarn=True` enables YaRN rope scaling (factor 4 over 32,768 original positions) for contexts beyond 32k.
    `max_string_length` caps strings inside constrained calls (for noise models; leave None for real ones).
    `logit_bias` adds to the logits of free (unconstrained) sampling, keyed by token id or by the text of a
    single token (`{"<|im_end|>": 5.0}`), as the OpenAI API's parameter does.
    Extra keyword arguments go to `llama_cpp.Llama` as they are. After each call `last_stats` says what the
    KV cache served and what was evaluated; `reset_cache()` forgets the cache, `close()` frees the model.
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
        temperature: float = 0.6,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.0,
        presence_penalty: float = 0.0,
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
        if temperature <= 0:
            raise ValueError("temperature must be positive: QwQ-32B degenerates under greedy decoding")
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        self.model_path = str(model_path) if model_path is not None else None
        self.n_ctx = n_ctx
        self.n_gpu_layers = n_gpu_layers
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.seed = seed
        self.max_tokens = max_tokens
        self.thinking_budget = thinking_budget
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.min_p = min_p
        self.presence_penalty = presence_penalty
        self.yarn = yarn
        self.yarn_factor = yarn_factor
        self.yarn_original_context = yarn_original_context
        self.constrain_tool_calls = constrain_tool_calls
        self.max_string_length = max_string_length
        self.logit_bias = dict(logit_bias or {})
        self.verbose = verbose
        self.llama_kwargs = llama_kwargs
        self.last_stats = LlamaStats()
        self._llama: Any = llama
        self._lock = threading.Lock()
        self._cache: list[tuple[int, bytes]] = []
        self._pieces: dict[int, bytes] = {}
        self._special: dict[str, int] = {}
        self._banned: list[int] = []
        self._eog: set[int] = set()
        self._bias: dict[int, float] = {}
        self._calls = 0

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
            llm: Llama = self._ensure_loaded()
            return llm

    @property
    def llama(self) -> Llama | None:
        """The loaded `llama_cpp.Llama`, or None before the first call."""
        llm: Llama | None = self._llama
        return llm

    def reset_cache(self) -> None:
        """Forget the KV cache: the next call evaluates its whole prompt (benchmarks use it for cold runs)."""
        with self._lock:
            self._cache = []
            if self._llama is not None:
                self._llama.reset()

    def close(self) -> None:
        """Free the model and its KV cache."""
        with self._lock:
            if self._llama is not None and hasattr(self._llama, "close"):
                self._llama.close()
            self._llama = None
            self._cache = []

    def _ensure_loaded(self) -> Any:
        if self._llama is None:
            try:
                import llama_cpp
            except ImportError as exc:
                raise ModelConfigurationError(
                    "LlamaCppModel needs llama-cpp-python: pip install 'qwq-agent[llama]'"
                ) from exc
            kwargs: dict[str, Any] = {
                "n_ctx": self.n_ctx,
                "n_gpu_layers": self.n_gpu_layers,
                "n_batch": self.n_batch,
                "verbose": self.verbose,
            }
            if self.n_threads is not None:
                kwargs["n_threads"] = self.n_threads
                kwargs["n_threads_batch"] = self.n_threads
            if self.seed is not None:
                kwargs["seed"] = self.seed
            if self.yarn:
                kwargs["rope_scaling_type"] = llama_cpp.LLAMA_ROPE_SCALING_TYPE_YARN
                kwargs["rope_freq_scale"] = 1.0 / self.yarn_factor
                kwargs["yarn_orig_ctx"] = self.yarn_original_context
            kwargs.update(self.llama_kwargs)
            try:
                self._llama = llama_cpp.Llama(model_path=str(self.model_path), **kwargs)
            except (ValueError, RuntimeError) as exc:
                raise ModelConfigurationError(f"llama.cpp could not load {self.model_path}: {exc}") from exc
        if not self._special:
            self._scan_vocab(self._llama)
        return self._llama

    def _scan_vocab(self, llm: Any) -> None:
        import llama_cpp

        vocab = llm._model.vocab
        for text in (THINK_CLOSE, CALL_OPEN, RESPONSE_OPEN, "<|im_end|>", "<|endoftext|>"):
            ids = llm.tokenize(text.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                self._special[text] = ids[0]
        self._eog = {t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        # Control tokens other than end-of-turn never belong in an assistant turn (<|im_start|>, vision pads,
        # FIM markers); a real model does not write them, a noise model would.
        control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        self._bias = {}
        for key, value in self.logit_bias.items():
            if isinstance(key, str):
                ids = llm.tokenize(key.encode(), add_bos=False, special=True)
                if len(ids) != 1:
                    raise ModelConfigurationError(f"logit_bias key {key!r} is not a single token ({ids})")
                key = ids[0]
            self._bias[int(key)] = float(value)
        self._banned = [
            t
            for t in range(llm.n_vocab())
            if t not in self._eog and llama_cpp.llama_vocab_get_attr(vocab, t) & control
        ]

    # -- the Model protocol ----------------------------------------------------------------------------------
    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        import prompts

        prompt = prompts.render(request.messages, list(request.tools), keep_thinking=request.keep_thinking)
        tool_choice = request.tool_choice
        if tool_choice not in ("auto", "none", "required") and not any(
            getattr(t, "name", None) == tool_choice for t in request.tools
        ):
            raise ModelConfigurationError(f"tool_choice names {tool_choice!r}, which is not among the tools")
        if not request.tools:
            tool_choice = "none"
        job = _Job(
            prompt=prompt,
            tools=list(request.tools),
            tool_choice=tool_choice,
            max_tokens=request.max_tokens or self.max_tokens,
            thinking_budget=request.thinking_budget
            if request.thinking_budget is not None
            else self.thinking_budget,
            loop=asyncio.get_running_loop(),
            queue=asyncio.Queue(),
        )
        worker = threading.Thread(target=self._work, args=(job,), name="llamacpp-generate", daemon=True)
        worker.start()
        try:
            while True:
                item = await job.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, ModelChunk)
                yield item
        finally:
            # Closing the stream (or cancelling its task) stops the worker at its next token.
            job.stop.set()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- the worker ------------------------------------------------------------------------------------------
    def _work(self, job: _Job) -> None:
        pending: list[str] = []
        guard = threading.Lock()
        scheduled = False

        def flush() -> None:  # runs on the event loop
            nonlocal scheduled
            with guard:
                text = "".join(pending)
                pending.clear()
                scheduled = False
            if text:
                job.queue.put_nowait(ModelChunk(text=text))

        def deliver(item: object) -> None:  # runs on the event loop: text still pending goes first
            flush()
            job.queue.put_nowait(item)

        def put(item: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
                job.loop.call_soon_threadsafe(deliver, item)

        def later() -> None:
            job.loop.call_later(_FLUSH_INTERVAL, flush)

        def put_text(text: str) -> None:
            # Text is delivered in batches (every 20 ms) rather than per token: each wake-up of the event loop
            # competes with the generating thread for the GIL and, on a busy machine, for a core; per-token
            # delivery cost 5-15% of speed on the tiny model. 20 ms of latency are invisible in a stream.
            nonlocal scheduled
            with guard:
                pending.append(text)
                if scheduled:
                    return
                scheduled = True
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(later)

        try:
            with self._lock:
                if job.stop.is_set():
                    return
                llm = self._ensure_loaded()
                _Generation(self, llm, job, put, put_text).run()
        except BaseException as exc:
            put(exc if isinstance(exc, ModelError) else ModelError(f"llama.cpp generation failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise
        finally:
            put(_END)

    def _piece(self, llm: Any, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = _token_bytes(llm, token)
            self._pieces[token] = piece
        return piece

    def _prefill(self, llm: Any, prompt: str) -> tuple[int, int]:
        """Make the KV cache hold `prompt`; return (prompt tokens, tokens reused from the cache)."""
        # Someone else (a benchmark's raw generate) may have used the Llama: trust only what it still holds.
        held = llm.n_tokens
        if len(self._cache) != held or any(
            a != b for a, (b, _) in zip(llm._input_ids[-8:], self._cache[held - 8 : held], strict=False)
        ):
            self._cache = [(int(t), self._piece(llm, int(t))) for t in llm._input_ids[:held]]
        data = prompt.encode("utf-8")
        offset = reused = 0
        for _token, piece in self._cache:
            if piece and data.startswith(piece, offset):
                offset += len(piece)
                reused += 1
            else:
                break
        # Never cut inside a UTF-8 character, and leave at least one token to evaluate: sampling needs the
        # logits of the prompt's last position.
        while reused and (offset >= len(data) or (data[offset] & 0xC0) == 0x80):
            reused -= 1
            offset -= len(self._cache[reused][1])
        rest = llm.tokenize(data[offset:], add_bos=False, special=True) if offset < len(data) else []
        total = reused + len(rest)
        if total >= llm.n_ctx():
            raise ContextLengthError(
                f"the prompt has {total} tokens and the context holds {llm.n_ctx()}; raise n_ctx "
                "(with yarn=True beyond 32k) or shorten the conversation"
            )
        llm.n_tokens = reused
        del self._cache[reused:]
        llm.eval(rest)
        self._cache.extend((t, self._piece(llm, t)) for t in rest)
        return total, reused


def _token_bytes(llm: Any, token: int) -> bytes:
    """The bytes of one token, control tokens spelled out.

    Not `Llama.detokenize`: llama-cpp-python 0.3.x decodes into a 32-byte buffer and returns nothing for longer
    tokens (Qwen2's vocabulary has 240, e.g. runs of dashes or spaces that code indentation produces), which
    would drop text from the stream and break the cache's text matching.
    """
    import ctypes

    import llama_cpp

    vocab = llm._model.vocab
    size = 64
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, True)
        if n >= 0:
            return bytes(buf.raw[:n])
        size = -n


class _Generation:
    """One completion: the phase machine around the token loop (runs in the worker thread)."""

    def __init__(self, model: LlamaCppModel, llm: Any, job: _Job, put: Any, put_text: Any) -> None:
        self.model = model
        self.llm = llm
        self.job = job
        self.put = put
        self.put_text = put_text
        self.n_ctx = llm.n_ctx()
        self.stats = LlamaStats()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.window = ""  # the last characters generated, for tag detection
        self.run_start = len(model._cache)  # cache index where the bytes not yet decoded begin
        self.run_text = ""  # text decoded from the tokens since run_start
        self.held = ""  # text not yet sent: it might be the start of an invented <tool_response>
        self.text: list[str] = []
        self.samplers: dict[str, Any] = {}
        self.grammar_sampler: Any = None
        model._calls += 1
        base_seed = model.seed if model.seed is not None else int.from_bytes(os.urandom(4), "little")
        self.seed = (base_seed + model._calls) & 0x7FFFFFFF
        import numpy as np

        self.rng = np.random.default_rng(self.seed)

    # -- samplers --------------------------------------------------------------------------------------------
    def _chain(self, kind: str) -> Any:
        chain = self.samplers.get(kind)
        if chain is not None:
            return chain
        import llama_cpp
        from llama_cpp import _internals

        m, llm = self.model, self.llm
        chain = _internals.LlamaSampler()  # type: ignore[no-untyped-call]
        if kind == "grammar":
            only = None if self.job.tool_choice in ("auto", "required") else self.job.tool_choice
            grammar = tool_call_gbnf(self.job.tools, only=only, max_string_length=m.max_string_length)
            sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, grammar.encode(), b"root")
            if not sampler:
                raise ModelError(f"llama.cpp rejected the tool-call grammar:\n{grammar}")
            llama_cpp.llama_sampler_chain_add(chain.sampler, sampler)
            self.grammar_sampler = sampler
        elif kind == "call-free":
            pass  # plain sampling, only ever checked against the grammar (see _sample_call)
        else:
            chain.add_penalties(
                n_vocab=llm.n_vocab(),
                penalty_last_n=64,
                penalty_repeat=1.0,
                penalty_freq=0.0,
                penalty_present=m.presence_penalty,
            )
            bans = list(m._banned)
            if kind == "answer-none" and CALL_OPEN in m._special:
                bans.append(m._special[CALL_OPEN])
            if kind == "think-forced":
                # A turn that must call a tool may not end inside its reasoning.
                bans.extend(m._eog)
            biases = {**m._bias, **dict.fromkeys(bans, float("-inf"))}
            if biases:
                chain.add_logit_bias(llm.n_vocab(), biases)
        chain.add_top_k(m.top_k)
        chain.add_top_p(m.top_p, 1)
        chain.add_min_p(m.min_p, 1)
        chain.add_temp(m.temperature)
        chain.add_dist(self.seed)
        self.samplers[kind] = chain
        return chain

    # -- text ------------------------------------------------------------------------------------------------
    def _emit(self, text: str) -> bool:
        """Send `text`; False when an invented <tool_response> begins (the turn is cut there)."""
        self.window = (self.window + text)[-64:]
        pending = self.held + text
        cut = pending.find(RESPONSE_OPEN)
        if cut >= 0:
            self._send(pending[:cut])
            self.held = ""
            return False
        keep = 0
        for n in range(min(len(RESPONSE_OPEN) - 1, len(pending)), 0, -1):
            if RESPONSE_OPEN.startswith(pending[-n:]):
                keep = n
                break
        self._send(pending[: len(pending) - keep])
        self.held = pending[len(pending) - keep :]
        return True

    def _send(self, text: str) -> None:
        if text:
            self.text.append(text)
            self.put_text(text)

    def _accept(self, token: int) -> bool:
        """Evaluate a generated token into the KV cache and emit its text."""
        llm, model = self.llm, self.model
        piece = model._piece(llm, token)
        llm.eval([token])
        model._cache.append((token, piece))
        self.stats.completion_tokens += 1
        text = self.decoder.decode(piece)
        self.run_text += text
        if "\ufffd" in text and b"\xef\xbf\xbd" not in piece:
            text += self._repair()
        if not self.decoder.getstate()[0]:  # every byte so far decoded: a character boundary
            self.run_start = len(model._cache)
            self.run_text = ""
        return self._emit(text)

    def _repair(self) -> str:
        """Bytes that are not UTF-8 were generated: make the KV cache hold the text that was emitted instead.

        The turn's text (and so the next prompt) carries U+FFFD where the bytes were invalid; a cache holding
        the bytes would stop matching there and cost a re-evaluation of everything after, every step. Rare
        with a real model, constant with the noise model.
        """
        llm, model = self.llm, self.model
        tail = self.decoder.decode(b"", final=True)  # buffered bytes of the broken character, if any
        self.decoder.reset()
        self.run_text += tail
        llm.n_tokens = self.run_start
        del model._cache[self.run_start :]
        tokens = llm.tokenize(self.run_text.encode("utf-8"), add_bos=False, special=False)
        llm.eval(tokens)
        model._cache.extend((t, model._piece(llm, t)) for t in tokens)
        self.stats.repaired_tokens += len(tokens)
        return tail

    def _inject(self, text: str) -> bool:
        """Write `text` into the turn as if the model had: evaluated, cached, and streamed."""
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        for kind, chain in self.samplers.items():
            if kind == "grammar":
                continue  # a grammar aborts the process on a token it does not allow; it is reset per call
            for t in tokens:
                chain.accept(t)
        ok = True
        for t in tokens:
            ok = self._accept(t) and ok
            self.stats.injected_tokens += 1
        return ok

    def _room(self) -> bool:
        return self.stats.completion_tokens < self.job.max_tokens and self.llm.n_tokens < self.n_ctx - 1

    # -- the phase machine -----------------------------------------------------------------------------------
    def run(self) -> None:
        model, llm, job = self.model, self.llm, self.job
        prompt_tokens, reused = model._prefill(llm, job.prompt)
        self.stats.prompt_tokens = prompt_tokens
        self.stats.cached_tokens = reused
        self.stats.evaluated_tokens = prompt_tokens - reused
        self.run_start = len(model._cache)
        forced = job.tool_choice not in ("auto", "none")
        constrained = model.constrain_tool_calls
        phase = "think" if job.prompt.endswith(THINK_OPEN) else "answer"
        if phase == "answer" and forced:
            phase = "open-call"
        finish = "length"
        special = model._special
        while True:
            if job.stop.is_set():
                finish = "cancelled"
                break
            if not self._room():
                finish = "length"
                break
            if phase == "open-call":
                # tool_choice "required" or a name: nothing but a call may follow the reasoning.
                if not self._inject(("" if self.window.endswith("\n\n") else "\n\n") + CALL_OPEN):
                    finish = "tool_response"
                    break
                phase = self._start_call(constrained)
                continue
            if phase == "after-call" and forced:
                # Another call, or the end of the turn: the only two choices left.
                token = self._choose([special.get(CALL_OPEN, -1), special.get("<|im_end|>", -1)])
                if token == special.get(CALL_OPEN):
                    if not self._inject("\n" + CALL_OPEN):
                        finish = "tool_response"
                        break
                    phase = self._start_call(constrained)
                    continue
                finish = "stop"
                break
            if (
                phase == "think"
                and job.thinking_budget is not None
                and self.stats.thinking_tokens >= job.thinking_budget
            ):
                if not self._close_reasoning():
                    finish = "tool_response"
                    break
                phase = "open-call" if forced else "answer"
                continue
            if phase == "think":
                kind = "think-forced" if forced else "think"
            elif phase == "call" and constrained:
                kind = "grammar"
            else:
                kind = "answer-none" if job.tool_choice == "none" else "answer"
            token = self._sample_call() if kind == "grammar" else self._chain(kind).sample(llm._ctx, -1)
            if kind != "grammar":
                for other_kind, other in self.samplers.items():
                    if other_kind not in (kind, "grammar"):
                        other.accept(token)
            if token in model._eog:
                finish = "stop"
                break
            if token == special.get(RESPONSE_OPEN):
                finish = "tool_response"
                break
            if phase == "think":
                self.stats.thinking_tokens += 1
            if kind == "grammar":
                self.stats.grammar_tokens += 1
            if not self._accept(token):
                finish = "tool_response"
                break
            if phase == "think" and (token == special.get(THINK_CLOSE) or self.window.endswith(THINK_CLOSE)):
                phase = "open-call" if forced else "answer"
            elif phase == "answer" and (token == special.get(CALL_OPEN) or self.window.endswith(CALL_OPEN)):
                phase = self._start_call(constrained)
            elif phase == "call" and self.window.endswith(CALL_CLOSE if constrained else CALL_CLOSE.strip()):
                phase = "after-call"
                if not forced:
                    phase = "answer"
        tail = self.decoder.decode(b"", final=True)
        if tail:
            self.held += tail
        if finish != "tool_response" and self.held:
            self._send(self.held)
        self.held = ""
        self.stats.finish_reason = finish
        self.stats.texts = ["".join(self.text)]
        model.last_stats = self.stats
        if finish == "cancelled":
            return
        self.put(
            ModelChunk(
                usage=Usage(
                    prompt_tokens=self.stats.prompt_tokens,
                    completion_tokens=self.stats.completion_tokens,
                    cached_tokens=self.stats.cached_tokens,
                ),
                finish_reason=finish,
                extra={
                    "evaluated_prompt_tokens": self.stats.evaluated_tokens,
                    "injected_tokens": self.stats.injected_tokens,
                    "thinking_tokens": self.stats.thinking_tokens,
                },
            )
        )

    def _sample_call(self) -> int:
        """Sample a token of a call body under the grammar, cheaply when the model already agrees with it.

        Applying a grammar means matching every one of the 151k vocabulary entries against it. As llama.cpp's
        own samplers do, first sample without it and check only that token; a model that writes the JSON
        the schema wants (QwQ nearly always does) never pays for the full pass. Only a rejected token costs
        the resample with the grammar over the whole vocabulary (every token of the noise test model).
        """
        import ctypes

        import llama_cpp

        chain = self._chain("grammar")
        token = int(self._chain("call-free").sample(self.llm._ctx, -1))
        cell = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
        candidates = llama_cpp.llama_token_data_array(
            data=ctypes.cast(cell, llama_cpp.llama_token_data_p), size=1, selected=-1, sorted=False
        )
        llama_cpp.llama_sampler_apply(self.grammar_sampler, ctypes.byref(candidates))
        if cell[0].logit != float("-inf"):
            llama_cpp.llama_sampler_accept(self.grammar_sampler, token)
            self.stats.grammar_fast_tokens += 1
            return token
        return int(chain.sample(self.llm._ctx, -1))

    def _start_call(self, constrained: bool) -> str:
        """Enter a call body (just opened by `<tool_call>`): under the grammar unless calls are unconstrained."""
        self.stats.tool_calls += 1
        if constrained:
            self._chain("grammar").reset()
        return "call"

    def _close_reasoning(self) -> bool:
        import prompts

        sentence = prompts.render_note("thinking_budget").strip()
        lead = "" if self.window.endswith("\n\n") else ("\n" if self.window.endswith("\n") else "\n\n")
        return self._inject(f"{lead}{sentence}\n{THINK_CLOSE}\n\n")

    def _choose(self, candidates: Sequence[int]) -> int:
        """Sample among a few tokens by the model's own logits (at the sampling temperature)."""
        import numpy as np

        valid = [t for t in candidates if t >= 0]
        if len(valid) == 1:
            return valid[0]
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.llm.n_vocab(),))
        scores = np.array([logits[t] for t in valid], dtype=np.float64) / self.model.temperature
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        return int(valid[int(self.rng.choice(len(valid), p=probs))])
