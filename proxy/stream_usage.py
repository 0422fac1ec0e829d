"""STREAM_USAGE=inject: ask OpenAI streams for usage, and hide the extra chunk from the client.

OpenAI reports a stream's usage only in a final chunk the client must ask for
(stream_options.include_usage). With STREAM_USAGE=inject the gateway asks on the client's
behalf, then drops that one usage-only chunk (choices: [] and a usage object) on its way to the
client, so the client receives the stream it asked for. The log keeps the upstream's real bytes.
"""

import json

from django.conf import settings

INJECT_ENDPOINTS = ("/chat/completions", "/completions")


def usage_inject_wanted(method: str, upstream_path: str) -> bool:
    """Cheap check before looking at the body: the setting is on and the endpoint streams chunks."""
    return (settings.STREAM_USAGE == "inject" and method == "POST"
            and upstream_path.rstrip("/").endswith(INJECT_ENDPOINTS))


def body_usage_inject(body: bytes) -> bytes | None:
    """The body with stream_options.include_usage set, or None when nothing should change."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or payload.get("stream") is not True:
        return None
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return None  # malformed: let the upstream answer it unchanged
    if (options or {}).get("include_usage"):
        return None  # the client asked: it gets the chunk
    payload["stream_options"] = {**(options or {}), "include_usage": True}
    return json.dumps(payload, ensure_ascii=False).encode()


class UsageChunkFilter:
    """Relays SSE bytes event by event, dropping the usage-only chunk the client did not ask for."""

    def __init__(self) -> None:
        self.buffer = b""
        self.dropped = 0
        self.passthrough = False

    def _keep(self, event: bytes) -> bool:
        """False for the usage-only chunk (every other event passes untouched)."""
        if b'"usage"' not in event or b"null" in event.split(b'"usage"', 1)[1][:8]:
            return True
        data = b"\n".join(line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:"))
        try:
            chunk = json.loads(data)
        except ValueError:
            return True
        is_usage_only = (isinstance(chunk, dict) and chunk.get("choices") == []
                         and isinstance(chunk.get("usage"), dict))
        self.dropped += is_usage_only
        return not is_usage_only

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to send now: every complete event that is kept (a partial one waits for its end)."""
        if self.passthrough:
            return chunk
        self.buffer += chunk
        end = self.buffer.rfind(b"\n\n")
        if end < 0:
            if b"\r\n\r\n" in self.buffer:  # not OpenAI's framing: never hold a stream back
                self.passthrough = True
                return self.flush()
            return b""
        complete, self.buffer = self.buffer[: end + 2], self.buffer[end + 2:]
        events = complete.split(b"\n\n")[:-1]
        return b"".join(e + b"\n\n" for e in events if self._keep(e))

    def flush(self) -> bytes:
        """Whatever is left when the upstream ends."""
        rest, self.buffer = self.buffer, b""
        return rest
