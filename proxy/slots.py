"""Each provider's share of the upstream connections: a limit on its requests in flight, and the wait for one.

The shared client's transport has no total limit. A single pool for every upstream let one
provider with all its connections busy (slow streams) make every other provider's requests
wait for a connection, then fail. Here each provider gets UPSTREAM_MAX_CONNECTIONS slots per
worker; a request holds one from before it is sent until its answer is closed, and waits at most
UPSTREAM_POOL_TIMEOUT for one.
"""

import asyncio
import weakref
from collections.abc import Callable

import httpx


class SlotWaitTimeout(httpx.PoolTimeout):
    """Every slot of the provider stayed taken for the whole wait."""


class ProviderSlots:
    """The slots of every provider, made on first use (one semaphore per provider name)."""

    def __init__(self, size: int, wait: float) -> None:
        self.size = size
        self.wait = wait
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    async def take(self, provider: str) -> Callable[[], None]:
        """Wait for a free slot of the provider; the function that gives it back (once, whatever calls it)."""
        semaphore = self._semaphores.get(provider)
        if semaphore is None:
            semaphore = self._semaphores[provider] = asyncio.Semaphore(self.size)
        if not semaphore.locked():
            await semaphore.acquire()  # free: taken at once, no timer to arm (most calls)
        else:
            try:
                async with asyncio.timeout(self.wait):
                    await semaphore.acquire()
            except TimeoutError:
                raise SlotWaitTimeout(f"no free slot for {provider}") from None
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                semaphore.release()
        return give_back


class SlotReturningStream(httpx.AsyncByteStream):
    """An answer's body stream that gives its slot back when it is closed (the relay always closes it)."""

    def __init__(self, stream: httpx.AsyncByteStream, give_back: Callable[[], None]) -> None:
        self._stream = stream
        self._give_back = give_back
        # An answer dropped unclosed (a relay that never started) must not keep its slot for good:
        # it is given back when the stream is collected, as aiohttp frees a dropped response's connection.
        weakref.finalize(self, give_back)

    def __aiter__(self):
        # The inner iterator itself: no extra generator layer on every chunk.
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        """Close the upstream answer, then free the slot."""
        try:
            await self._stream.aclose()
        finally:
            self._give_back()
