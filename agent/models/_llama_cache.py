"""The KV cache of `LlamaCppModel`, bookkept by text so that a new prompt reuses what an old one evaluated.

The cache is a list of (token, bytes) pairs mirroring what the llama.cpp context holds. A new prompt reuses
the longest run of cached tokens whose bytes spell its beginning; only the rest is tokenized and evaluated.
Matching text rather than re-tokenized ids matters: a model's sampled tokens are often not what the
tokenizer would produce for the same text (always so for the noise test model), so `Llama.generate`'s
token-id prefix match would re-evaluate most of every generated turn. With `keep_thinking="current_task"`
each prompt extends the previous prompt plus the generated text, so a step evaluates only its new tokens.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from agent.models._llama_runtime import LlamaRuntime
from agent.models.errors import ContextLengthError

__all__ = ["KVCache", "Prefill"]


@dataclass(frozen=True, slots=True)
class Prefill:
    """What one prompt cost: its tokens, and how many of them the cache already held."""

    prompt_tokens: int
    reused_tokens: int

    @property
    def evaluated_tokens(self) -> int:
        return self.prompt_tokens - self.reused_tokens


class KVCache:
    """The (token, bytes) mirror of the context, and the only code that moves the context's position."""

    def __init__(self, runtime: LlamaRuntime) -> None:
        self.runtime = runtime
        self.entries: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        self.entries = []

    def _resync(self) -> None:
        # Someone else (a benchmark's raw generate) may have used the Llama: trust only what it still holds.
        rt = self.runtime
        held = rt.n_tokens
        if len(self.entries) == held and all(
            a == b for a, (b, _) in zip(rt.held_tokens()[-8:], self.entries[held - 8 : held], strict=False)
        ):
            return
        self.entries = [(t, rt.token_bytes(t)) for t in rt.held_tokens()]

    def prefill(self, prompt: str) -> Prefill:
        """Make the context hold `prompt`, reusing the longest cached prefix that spells its beginning."""
        self._resync()
        rt = self.runtime
        data = prompt.encode("utf-8")
        offset = reused = 0
        for _token, piece in self.entries:
            if piece and data.startswith(piece, offset):
                offset += len(piece)
                reused += 1
            else:
                break
        # Never cut inside a UTF-8 character, and leave at least one token to evaluate: sampling needs the
        # logits of the prompt's last position.
        while reused and (offset >= len(data) or (data[offset] & 0xC0) == 0x80):
            reused -= 1
            offset -= len(self.entries[reused][1])
        rest = rt.tokenize(data[offset:]) if offset < len(data) else []
        total = reused + len(rest)
        if total >= rt.n_ctx:
            raise ContextLengthError(
                f"the prompt has {total} tokens and the context holds {rt.n_ctx}; raise n_ctx "
                "(with yarn=True beyond 32k) or shorten the conversation"
            )
        self.truncate(reused)
        self.extend(rest)
        return Prefill(prompt_tokens=total, reused_tokens=reused)

    def truncate(self, n: int) -> None:
        self.runtime.keep(n)
        del self.entries[n:]

    def extend(self, tokens: list[int]) -> None:
        """Evaluate `tokens` after what the context holds."""
        rt = self.runtime
        rt.eval(tokens)
        self.entries.extend((t, rt.token_bytes(t)) for t in tokens)

    def room(self) -> int:
        """Tokens that still fit (one position is kept free for the last sample)."""
        return self.runtime.n_ctx - 1 - self.runtime.n_tokens


class TextDecoder:
    """Turns generated tokens into text, and keeps the cache equal to the text when bytes are not UTF-8.

    When a model generates bytes that are not valid UTF-8, the turn's text (and so the next prompt) carries
    U+FFFD where they were; a cache holding the original bytes would stop matching there and cost a
    re-evaluation of everything after it, every step. So the tokens of the broken character are replaced
    in the cache by the tokens of the text that was emitted. Rare with a real model, constant with noise.
    """

    def __init__(self, cache: KVCache) -> None:
        self.cache = cache
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._run_start = len(cache)  # cache index where the bytes not yet fully decoded begin
        self._run_text = ""
        self.repaired_tokens = 0

    def push(self, token: int) -> str:
        """Evaluate a generated token into the cache; return the text it completes."""
        cache = self.cache
        piece = cache.runtime.token_bytes(token)
        cache.extend([token])
        text = self._decoder.decode(piece)
        self._run_text += text
        if "\ufffd" in text and b"\xef\xbf\xbd" not in piece:
            text += self._repair()
        if not self._decoder.getstate()[0]:  # every byte so far decoded: a character boundary
            self._run_start = len(cache)
            self._run_text = ""
        return text

    def _repair(self) -> str:
        cache = self.cache
        tail = self._decoder.decode(b"", final=True)  # buffered bytes of the broken character, if any
        self._decoder.reset()
        self._run_text += tail
        cache.truncate(self._run_start)
        tokens = cache.runtime.tokenize(self._run_text.encode("utf-8"), special=False)
        cache.extend(tokens)
        self.repaired_tokens += len(tokens)
        return tail

    def flush(self) -> str:
        """Text of bytes still buffered at the end of generation (an incomplete character)."""
        return self._decoder.decode(b"", final=True)
