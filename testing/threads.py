"""A mock server run on its own event loop in a thread, so synchronous tests and the benchmark can use it."""

import asyncio
import threading
from typing import Any


class ServerThread:
    """Runs `mock` (an object with `async start()`, `url` and, once started, `server`) in a thread."""

    def __init__(self, mock: Any) -> None:
        self.mock = mock
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.mock.start())
            ready.set()
            self.loop.run_forever()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    @property
    def url(self) -> str:
        """Base URL of the mock."""
        return self.mock.url

    def stop(self) -> None:
        """Close the server, then stop the loop."""
        async def close() -> None:
            self.mock.server.close()
            await self.mock.server.wait_closed()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
