"""Everything this project uses of llama-cpp-python, behind one small adapter.

`LlamaCppModel` runs its own token loop (see `_llama_generation`), which needs more than the public `Llama`
API offers: the vocabulary's token attributes, exact token bytes, sampler chains, grammar samplers and the
KV cache position. All of it lives here, so a llama-cpp-python upgrade means checking this one file.

Loading also sets a model parameter that `Llama()` does not expose: `use_extra_bufts`. llama.cpp's CPU
backend offers "extra buffer types" that repack quantized weights for faster kernels; on CPUs with AMX
(Sapphire Rapids and later Xeons), the AMX buffer type of llama-cpp-python 0.3.36 built with native flags
crashes the process (`ggml_backend_amx_mul_mat`) on the first decode of any quantized model. `Llama()`
fills its parameters from `llama_model_default_params()`, so loading swaps that function, for the duration
of the constructor and under a lock, for one that switches the extra buffer types off.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from llama_cpp import Llama

__all__ = [
    "GrammarSampler",
    "LlamaRuntime",
    "LoadOptions",
    "SamplerChain",
    "cpu_has_amx",
    "default_extra_buffer_types",
    "model_params",
]

_PARAMS_LOCK = threading.Lock()


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Linux x86: the `amx_tile` flag in /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return "amx_tile" in line.split()
    return False


def default_extra_buffer_types() -> bool:
    """The choice for `extra_buffer_types=None`: on unless the CPU has AMX (see the module docstring)."""
    return not cpu_has_amx()


@contextmanager
def model_params(extra_buffer_types: bool | None) -> Iterator[None]:
    """While active, `Llama()` builds its model parameters with `use_extra_bufts` as given (None: untouched).

    Held for as long as the block runs, under a lock: `agent.models.llama_server` holds it while its server
    loads and serves."""
    if extra_buffer_types is None:
        yield
        return
    import llama_cpp.llama_cpp as low

    with _PARAMS_LOCK:
        original = low.llama_model_default_params

        def patched() -> Any:
            params = original()
            params.use_extra_bufts = extra_buffer_types
            return params

        low.llama_model_default_params = patched
        try:
            yield
        finally:
            low.llama_model_default_params = original


class SamplerChain:
    """One llama.cpp sampler chain (penalties, bias, top-k/p, min-p, temperature, the final draw)."""

    def __init__(self, runtime: LlamaRuntime) -> None:
        from llama_cpp import _internals

        self._runtime = runtime
        self._chain = _internals.LlamaSampler()  # type: ignore[no-untyped-call]

    def add_penalties(self, presence: float, last_n: int = 64) -> None:
        self._chain.add_penalties(
            n_vocab=self._runtime.n_vocab,
            penalty_last_n=last_n,
            penalty_repeat=1.0,
            penalty_freq=0.0,
            penalty_present=presence,
        )

    def add_bias(self, bias: Mapping[int, float]) -> None:
        if bias:
            self._chain.add_logit_bias(self._runtime.n_vocab, dict(bias))

    def add_grammar(self, grammar: str) -> Any:
        """Add a GBNF grammar (root rule `root`); returns the raw sampler for `GrammarSampler`."""
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self._runtime.vocab, grammar.encode(), b"root")
        if not sampler:
            raise ValueError(f"llama.cpp rejected the grammar:\n{grammar}")
        llama_cpp.llama_sampler_chain_add(self._chain.sampler, sampler)
        return sampler

    def add_distribution(
        self, *, top_k: int, top_p: float, min_p: float, temperature: float, seed: int
    ) -> None:
        self._chain.add_top_k(top_k)
        self._chain.add_top_p(top_p, 1)
        self._chain.add_min_p(min_p, 1)
        self._chain.add_temp(temperature)
        self._chain.add_dist(seed)

    def sample(self) -> int:
        """Sample at the last evaluated position (the chain accepts the token itself)."""
        return int(self._chain.sample(self._runtime.llama._ctx, -1))

    def accept(self, token: int) -> None:
        self._chain.accept(token)

    def reset(self) -> None:
        self._chain.reset()  # type: ignore[no-untyped-call]


class GrammarSampler:
    """A chain ending in a grammar, with a cheap check of one freely sampled token against that grammar."""

    def __init__(self, runtime: LlamaRuntime, grammar: str) -> None:
        self.chain = SamplerChain(runtime)
        self._grammar = self.chain.add_grammar(grammar)

    def allows(self, token: int) -> bool:
        """Whether the grammar admits `token` next; if so it is accepted into the grammar's state."""
        import llama_cpp

        cell = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
        candidates = llama_cpp.llama_token_data_array(
            data=ctypes.cast(cell, llama_cpp.llama_token_data_p), size=1, selected=-1, sorted=False
        )
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(candidates))
        if cell[0].logit == float("-inf"):
            return False
        llama_cpp.llama_sampler_accept(self._grammar, token)
        return True


@dataclass(frozen=True)
class LoadOptions:
    """How llama.cpp loads a GGUF: what `llama_cpp.Llama` is built with, held apart from how it generates.

    `yarn` is (factor, original context) or None; `extra_buffer_types` None decides from the CPU;
    `llama_kwargs` go to `llama_cpp.Llama` as they are, after (and over) the others.
    """

    n_ctx: int = 32768
    n_gpu_layers: int = -1
    n_batch: int = 512
    n_threads: int | None = None
    seed: int | None = None
    yarn: tuple[float, int] | None = None
    extra_buffer_types: bool | None = None
    verbose: bool = False
    llama_kwargs: Mapping[str, Any] = field(default_factory=dict)


class LlamaRuntime:
    """A loaded model and its context: tokenizer, exact token bytes, evaluation, logits, samplers."""

    def __init__(self, llama: Llama) -> None:
        self.llama = llama
        self._pieces: dict[int, bytes] = {}

    # -- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, model_path: str, options: LoadOptions) -> LlamaRuntime:
        """Load a GGUF as `options` say."""
        import llama_cpp

        kwargs: dict[str, Any] = {
            "n_ctx": options.n_ctx,
            "n_gpu_layers": options.n_gpu_layers,
            "n_batch": options.n_batch,
            "verbose": options.verbose,
        }
        if options.n_threads is not None:
            kwargs["n_threads"] = options.n_threads
            kwargs["n_threads_batch"] = options.n_threads
        if options.seed is not None:
            kwargs["seed"] = options.seed
        if options.yarn is not None:
            factor, original = options.yarn
            kwargs["rope_scaling_type"] = llama_cpp.LLAMA_ROPE_SCALING_TYPE_YARN
            kwargs["rope_freq_scale"] = 1.0 / factor
            kwargs["yarn_orig_ctx"] = original
        kwargs.update(options.llama_kwargs)
        extra = options.extra_buffer_types
        with model_params(default_extra_buffer_types() if extra is None else extra):
            llama = llama_cpp.Llama(model_path=model_path, **kwargs)
        return cls(llama)

    @property
    def extra_buffer_types(self) -> bool | None:
        """Whether the loaded model uses llama.cpp's extra buffer types (None if not known)."""
        params = getattr(self.llama, "model_params", None)
        value = getattr(params, "use_extra_bufts", None)
        return None if value is None else bool(value)

    # -- the vocabulary --------------------------------------------------------------------------------------
    @property
    def vocab(self) -> Any:
        return self.llama._model.vocab

    @functools.cached_property
    def n_vocab(self) -> int:
        return int(self.llama.n_vocab())

    @property
    def n_ctx(self) -> int:
        return int(self.llama.n_ctx())

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.llama.metadata)

    @property
    def chat_template(self) -> str | None:
        return self.llama.metadata.get("tokenizer.chat_template") or None

    def token_text(self, which: str) -> str:
        """The text of the model's "bos" or "eos" token ("" when it has none), for chat templates."""
        token = self.llama.token_bos() if which == "bos" else self.llama.token_eos()
        if token is None or token < 0:
            return ""
        return self.token_bytes(int(token)).decode("utf-8", errors="replace")

    def tokenize(self, data: bytes, *, special: bool = True) -> list[int]:
        return list(self.llama.tokenize(data, add_bos=False, special=special))

    def single_token(self, text: str) -> int | None:
        """The id of `text` if the vocabulary has it as one token, else None."""
        ids = self.tokenize(text.encode("utf-8"))
        return ids[0] if len(ids) == 1 else None

    def end_of_generation_tokens(self) -> set[int]:
        import llama_cpp

        vocab = self.vocab
        return {t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)}

    def control_tokens(self) -> set[int]:
        import llama_cpp

        vocab, control = self.vocab, llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        return {t for t in range(self.n_vocab) if llama_cpp.llama_vocab_get_attr(vocab, t) & control}

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one token, control tokens spelled out.

        Not `Llama.detokenize`: llama-cpp-python 0.3.x decodes into a 32-byte buffer and returns nothing for
        longer tokens (Qwen2's vocabulary has 240, e.g. runs of dashes or spaces in indented code), which
        would drop text from the stream and break the cache's text matching.
        """
        piece = self._pieces.get(token)
        if piece is not None:
            return piece
        import llama_cpp

        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, size, 0, True)
            if n >= 0:
                piece = bytes(buf.raw[:n])
                break
            size = -n
        self._pieces[token] = piece
        return piece

    # -- the KV cache position -------------------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        """How many tokens the context holds."""
        return int(self.llama.n_tokens)

    def held_tokens(self) -> list[int]:
        """The ids the context holds, in order (someone else may have used the `Llama` in between)."""
        return [int(t) for t in self.llama._input_ids[: self.n_tokens]]

    def keep(self, n: int) -> None:
        """Forget everything after the first `n` tokens (the next `eval` overwrites it)."""
        self.llama.n_tokens = n

    def eval(self, tokens: Sequence[int]) -> None:
        if tokens:
            self.llama.eval(list(tokens))

    def last_logits(self) -> np.ndarray[Any, Any]:
        import numpy as np

        return np.ctypeslib.as_array(self.llama._ctx.get_logits_ith(-1), shape=(self.n_vocab,))

    # -- samplers --------------------------------------------------------------------------------------------
    def chain(self) -> SamplerChain:
        return SamplerChain(self)

    def grammar_sampler(self, grammar: str) -> GrammarSampler:
        return GrammarSampler(self, grammar)

    # -- lifetime --------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.llama.reset()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if hasattr(self.llama, "close"):
            self.llama.close()
