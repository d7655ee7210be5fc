"""`Lifecycle`: the `with` and `async with` protocol of what starts and closes, written once.

`DockerSandbox` and `SandboxPool` both start on entering a block and close on leaving it, also when it
raises; holding the four methods here keeps the sync and async forms of the two from drifting apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Lifecycle(ABC):
    """Started by `start()` or `await astart()`, released by `close()` or `await aclose()`; `with` and
    `async with` do both."""

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    async def astart(self) -> Self: ...

    @abstractmethod
    async def aclose(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
