"""The replay page of an exchange: edit the body, give a credential, send it through the gateway again."""

import httpx
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse

from logs.admin.views import page_context
from logs.replay import ReplayRefused, replay_send
from logs.selectors import exchange_detail
from providers import registry


def _gateway_base(request: HttpRequest) -> str | None:
    """This gateway's own address: the socket the admin page came in on (never the Host header a client sends)."""
    name, port = request.META.get("SERVER_NAME", ""), request.META.get("SERVER_PORT", "")
    if not name or name == "unknown" or not str(port).isdigit():
        return None
    name = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(name, name)
    return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"


def replay_view(model_admin, request: HttpRequest, object_id: str) -> TemplateResponse:
    """GET: the form (the original body to edit). POST: send it and show what the gateway answered.

    Superusers only: a replay spends money on the provider.
    """
    if not (request.user.is_active and request.user.is_superuser):
        raise PermissionDenied
    req = exchange_detail(object_id)
    if req is None:
        raise Http404("No such exchange")
    body = req.body
    result, error = None, ""
    if request.method == "POST":
        body = request.POST.get("body", "") if req.body is not None else None
        base = _gateway_base(request)
        try:
            if base is None:
                raise ReplayRefused("This server's own address is unknown (a Unix socket?): replay from the command "
                                    "line with Copy as cURL instead.")
            result = replay_send(base_url=base, req=req, provider=registry(settings.GATEWAY_PROVIDERS).get(req.provider),
                                 body=body, provider_key=request.POST.get("provider_key", "").strip(),
                                 gateway_key=request.POST.get("gateway_key", "").strip())
        except ReplayRefused as exc:
            error = str(exc)
        except httpx.HTTPError as exc:
            error = f"The gateway did not answer the replay: {type(exc).__name__}"
    context = page_context(model_admin, request, f"Replay {req.method} {req.endpoint}", req=req, body=body,
                           result=result, error=error,
                           new_url=reverse("admin:logs_request_change", args=[result.request_id])
                           if result and result.request_id else "")
    return TemplateResponse(request, "admin/logs/request/replay.html", context)
