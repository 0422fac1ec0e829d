"""A request hook that does nothing: what one configured hook costs (bench/compare.py --this-env).

GATEWAY_HOOKS=bench.noop_hook.Noop (a sync hook: it runs in a worker thread, the costlier path),
bench.noop_hook.NoopInline (sync, declared non-blocking: run on the event loop) or
bench.noop_hook.NoopAsync (awaited on the event loop).
"""


class Noop:
    def on_request(self, exchange) -> None:
        return None


class NoopInline:
    blocking = False

    def on_request(self, exchange) -> None:
        return None


class NoopAsync:
    async def on_request(self, exchange) -> None:
        return None
