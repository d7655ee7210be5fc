"""`SamplingConfig`: how a backend samples tokens, shared by the in-process and the HTTP backend.

The defaults are what QwQ-32B's authors recommend (docs/chat-format.md): temperature 0.6, top-p 0.95,
top-k 40, min-p 0, never greedy; a presence penalty (up to 2) helps against endless repetition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["SamplingConfig"]


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    """Sampling parameters. `top_k`/`min_p` None leave the server's default (HTTP); in-process they mean off."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int | None = 40
    min_p: float | None = 0.0
    presence_penalty: float = 0.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError("temperature must be positive: QwQ-32B degenerates under greedy decoding")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1]; got {self.top_p}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be 0 (off) or more; got {self.top_k}")
        if self.min_p is not None and not 0 <= self.min_p < 1:
            raise ValueError(f"min_p must be in [0, 1); got {self.min_p}")
        if not -2 <= self.presence_penalty <= 2:
            raise ValueError(f"presence_penalty must be in [-2, 2]; got {self.presence_penalty}")

    def with_(self, **changes: Any) -> SamplingConfig:
        """A copy with some fields changed (None values are ignored, so CLI options can pass through)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def request_fields(self) -> dict[str, Any]:
        """The fields of an OpenAI-compatible request body (top_k/min_p are extensions most servers take)."""
        body: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p}
        if self.top_k is not None:
            body["top_k"] = self.top_k
        if self.min_p is not None:
            body["min_p"] = self.min_p
        if self.presence_penalty:
            body["presence_penalty"] = self.presence_penalty
        return body
