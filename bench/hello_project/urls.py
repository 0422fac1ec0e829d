"""One catch-all async view answering a small JSON body, like a chat completion would."""

from django.http import HttpRequest, HttpResponse
from django.urls import re_path

BODY = b'{"id":"chatcmpl-hello","object":"chat.completion","choices":[{"index":0,"message":' \
       b'{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}]}'


async def hello_view(request: HttpRequest, path: str = "") -> HttpResponse:
    """Answer at once: Django's own per-request cost and nothing else."""
    return HttpResponse(BODY, content_type="application/json")


urlpatterns = [re_path(r"^(?P<path>.*)$", hello_view)]
