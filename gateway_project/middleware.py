"""Middleware of the admin's pages (the proxy does not go through Django's handler)."""

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBadRequest
from django.utils.decorators import sync_and_async_middleware


def _nul_in_query(request: HttpRequest) -> bool:
    query = request.META.get("QUERY_STRING", "")
    return "%00" in query or "\x00" in query


def _nul_refusal() -> HttpResponseBadRequest:
    return HttpResponseBadRequest("A NUL character is not allowed in a query.", content_type="text/plain")


@sync_and_async_middleware
def nul_refused(get_response):
    """A NUL character in a query value is answered 400 before any view reads it.

    No filter or search of the admin means one, and PostgreSQL cannot hold one in a text value:
    passed on to a query it failed as a 500 (SQLite found nothing). Forms refuse it already
    (Django's fields' ProhibitNullCharactersValidator).
    """
    if iscoroutinefunction(get_response):
        async def middleware(request):
            return _nul_refusal() if _nul_in_query(request) else await get_response(request)
    else:
        def middleware(request):
            return _nul_refusal() if _nul_in_query(request) else get_response(request)
    return middleware
