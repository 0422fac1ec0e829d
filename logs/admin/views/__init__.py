"""The log browser's pages beyond the list, one module each; what they share is here."""

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse

from logs.selectors import pending_log_records


def header_context() -> dict:
    """What every log page shows in its header: log records not yet in the database."""
    return {"pending_log_records": pending_log_records()}


def page_context(model_admin, request: HttpRequest, title: str, **extra) -> dict:
    """The admin's own context for a log page, plus its header and the page's data."""
    return {**model_admin.admin_site.each_context(request), **header_context(), "opts": model_admin.model._meta,
            "title": title, **extra}


def _async_chunks(chunks: Iterator, thread_sensitive: bool) -> AsyncIterator:
    """Pull a sync iterator from a worker thread piece by piece, so an ASGI server never buffers it whole."""
    done = object()
    pull = sync_to_async(lambda: next(chunks, done), thread_sensitive=thread_sensitive)

    async def gen():
        while (piece := await pull()) is not done:
            yield piece
    return gen()


def streaming(request: HttpRequest, chunks: Iterator, content_type: str, *, thread_sensitive: bool
              ) -> StreamingHttpResponse:
    """A streaming response that stays flat in memory under ASGI (async body) and WSGI (sync).

    thread_sensitive: the chunks come from the ORM (which must stay on Django's thread).
    """
    content = _async_chunks(chunks, thread_sensitive) if isinstance(request, ASGIRequest) else chunks
    return StreamingHttpResponse(content, content_type=content_type)
