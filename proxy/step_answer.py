"""A policy step's own answer (a hook's, a refusal, the hold queue's, a cache hit) as the log keeps it: what the client got.

Its body goes through the capture an upstream's answer goes through (logs/pipeline/capture.py): a
binary body is kept as a file, a compressed one decoded, an event stream's events timed, the
exchange's credentials masked. A streamed answer (a hook's StreamingHttpResponse, a paced cache
replay) is captured as it goes out and logged when it ends or its client leaves, as a relayed one is.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from django.http import HttpResponseBase

from logs.outcomes import Outcome
from logs.pipeline.capture import BodyCapture
from logs.records import ResponseRecord
from logs.redaction.scrub import error_scrub
from proxy.exchange import Exchange, response_header_pairs
from proxy.threads import off_loop

log = logging.getLogger(__name__)


class AnswerEnd:
    """The end of a streamed answer of the gateway's own, done once: logged when its last chunk went out or the
    client left, with its duration and whether the client took it all (the ASGI adapter calls abandon)."""

    def __init__(self, x: Exchange, capture: BodyCapture, record_new: Callable[[], ResponseRecord]) -> None:
        self.x, self.capture, self.record_new = x, capture, record_new
        self.done = False

    async def abandon(self) -> None:
        """The ASGI adapter's end of the response: the client left before the answer began, or during it."""
        await self(False)

    async def __call__(self, finished: bool) -> None:
        if self.done:
            return
        self.done = True
        if not finished:
            self.x.cancelled_mark("before the response ended")
        self.x.clock_stop()
        record = self.record_new()
        try:
            if self.capture.blocking():
                await asyncio.shield(off_loop(self.capture.finish, record, self.x.scrubber))
            else:
                self.capture.finish(record, self.x.scrubber)
        finally:
            self.x.response_log(record)


async def _chunks(content, is_async: bool) -> AsyncIterator[bytes]:
    """A streamed answer's chunks; a sync iterator's each read in a worker thread (it may wait on a file or a
    socket), where Django would read it whole first."""
    if is_async:
        async for chunk in content:
            yield chunk
        return
    end = object()
    iterator = iter(content)
    while (chunk := await off_loop(next, iterator, end)) is not end:
        yield chunk


async def _captured(x: Exchange, chunks: AsyncIterator[bytes], capture: BodyCapture,
                    end: AnswerEnd) -> AsyncIterator[bytes]:
    finished = False
    try:
        async for chunk in chunks:
            capture.feed(chunk)
            yield chunk
        finished = True
    except Exception as exc:
        # The answer's own iterator broke (a hook's generator): the client's read ends short, as it does when an
        # upstream breaks off, and the log says why (it said the client had left).
        message = error_scrub(f"the step's streamed answer failed: {type(exc).__name__}: {exc}", x.scrubber.secrets)
        log.error("exchange %s: %s", x.request_id, message)
        x.fail(Outcome.GATEWAY_ERROR, message)
        raise
    finally:
        await end(finished)


async def step_answer_log(x: Exchange, answer: HttpResponseBase) -> None:
    """Log a step's answer as the exchange's response, body as the client gets it: now, or for a streamed one, as
    it ends (its content is wrapped to be captured on the way out)."""
    content_type = answer.get("Content-Type", "")
    is_sse = content_type.lower().startswith("text/event-stream")
    capture = BodyCapture(spool_name=f"{x.request_id}.response", content_type=content_type,
                          content_encoding=answer.get("Content-Encoding", ""), stream=is_sse, started=x.started)
    headers = response_header_pairs(answer)  # its cookies too: the log shows what the client got

    def record_new() -> ResponseRecord:
        return x.response_record(status=answer.status_code, headers=headers, content_type=content_type,
                                 is_stream=is_sse)

    if answer.streaming:
        end = AnswerEnd(x, capture, record_new)
        answer.streaming_content = _captured(x, _chunks(answer.streaming_content, answer.is_async), capture, end)
        answer.gateway_abandon = end.abandon
        return
    capture.feed(answer.content)
    await AnswerEnd(x, capture, record_new)(True)
