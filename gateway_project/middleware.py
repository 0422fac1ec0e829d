"""Runs Django's session/auth/CSRF stack only for the admin, so proxied calls skip it."""

from collections.abc import Awaitable, Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.module_loading import import_string
from asgiref.sync import iscoroutinefunction, markcoroutinefunction

Handler = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class AdminStackMiddleware:
    """Send admin and static paths through ADMIN_MIDDLEWARE; everything else goes straight on."""

    async_capable = True
    sync_capable = False

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        chain = get_response
        for path in reversed(settings.ADMIN_MIDDLEWARE):
            chain = import_string(path)(chain)
        self.admin_chain = chain
        self.prefixes = tuple(settings.ADMIN_PATH_PREFIXES)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        """Pick the chain by path prefix."""
        if request.path_info.startswith(self.prefixes):
            return await self.admin_chain(request)
        return await self.get_response(request)
