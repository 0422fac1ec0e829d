"""The "Held requests" page, its JSON state (polled every second by the page and by every admin page's badge),
the switch, and the decision buttons. Thin views: parse, call hold/services.py, answer."""

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from hold.models import Decision, HeldRequest
from hold.selectors import held_body, held_listed, held_recent, held_waiting, switch_read
from hold.services import REQUEST_ID, HoldError, edited_body_size_check, held_decide, switch_set

BODY_PREVIEW_MAX = 256 * 1024  # larger bodies are not sent to the page (nor editable there)


def _held_json(row: HeldRequest, now) -> dict:
    """A waiting request for the page; its body is fetched when the editor opens (body.json)."""
    return {"id": row.id, "provider": row.provider, "method": row.method, "path": row.path, "model": row.model,
            "key": row.gateway_key, "editable": row.body_chars is not None and row.body_chars <= BODY_PREVIEW_MAX,
            "body_size": row.body_size, "held_at": row.held_at.isoformat(),
            "waited_s": round((now - row.held_at).total_seconds(), 1),
            "left_s": max(0.0, round((row.deadline - now).total_seconds(), 1)),
            "log_url": reverse("admin:logs_request_change", args=[row.id])}


def _decided_json(row: HeldRequest) -> dict:
    return {"id": row.id, "method": row.method, "path": row.path, "model": row.model, "decision": row.decision,
            "edited": row.edited, "by": row.decided_by,
            "at": row.decided_at.isoformat() if row.decided_at else None, "state": row.state,
            "held_ms": row.held_ms, "log_url": reverse("admin:logs_request_change", args=[row.id])}


class EditedBodyLimit(FileUploadHandler):
    """First of the decide view's upload handlers: an uploaded file's bytes past MAX_REQUEST_BODY_BYTES are counted
    and not passed on to Django's own handlers (which spool a file over FILE_UPLOAD_MAX_MEMORY_SIZE to disk): an
    oversized edit was written whole to a temporary file before its size was checked. Its whole size is recorded on
    the request, for the view to refuse it with."""

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        return None if start + len(raw_data) > settings.MAX_REQUEST_BODY_BYTES else raw_data

    def file_complete(self, file_size: int) -> None:
        if file_size > settings.MAX_REQUEST_BODY_BYTES:
            self.request.edited_body_size = file_size
        return None  # the next handler holds the data (all of it, or the limit's worth of a refused one)


def _edited_body(request: HttpRequest) -> str | None:
    """The edited body of a decision: the page sends it as a file, so that only MAX_REQUEST_BODY_BYTES (the
    CLI's limit too, kept by EditedBodyLimit as it arrives) bounds it; a form field (a script's post) is bounded by
    DATA_UPLOAD_MAX_MEMORY_SIZE."""
    edited_body_size_check(getattr(request, "edited_body_size", 0))  # an upload past the limit, not kept whole
    upload = request.FILES.get("body")
    if upload is None:
        return request.POST.get("body")
    try:
        return upload.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HoldError(f"the edited body is not UTF-8 text: {exc}") from None


@admin.register(HeldRequest)
class HeldRequestAdmin(admin.ModelAdmin):
    """No add or change forms: the page lists what waits, and its buttons decide."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("state.json", wrap(self.state_view), name="hold_heldrequest_state"),
            path("body.json", wrap(self.body_view), name="hold_heldrequest_body"),
            path("switch/", wrap(require_POST(self.switch_view)), name="hold_heldrequest_switch"),
            # CSRF is checked in the view, after it parsed the post with its own upload handlers (Django's way to
            # change them: the CSRF middleware would read the post first).
            path("decide/", wrap(csrf_exempt(require_POST(self.decide_view))), name="hold_heldrequest_decide"),
            path("", wrap(self.changelist_view), name="hold_heldrequest_changelist"),
        ]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        """The held-requests page (it fills itself from state.json)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "title": "Held requests", "opts": self.model._meta,
                   "decisions": Decision.choices, "can_decide": self.has_change_permission(request)}
        return TemplateResponse(request, "admin/hold/heldrequest/held.html", context)

    def state_view(self, request: HttpRequest) -> JsonResponse:
        """The switch and the waiting requests (?brief=1: the count only, for the badge)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        switch = switch_read()
        waiting = held_waiting()
        newest = waiting.order_by("-held_at").values_list("held_at", flat=True).first()
        # The newest arrival's time: the badge beeps when it moves on (a count alone stays put when one
        # request leaves as another comes).
        state = {"on": switch.on, "filters": switch.filters(), "count": waiting.count(),
                 "newest": newest.isoformat() if newest else None}
        if not request.GET.get("brief"):
            now = timezone.now()
            state["waiting"] = [_held_json(row, now) for row in held_listed()]
            state["recent"] = [_decided_json(row) for row in held_recent()]
        return JsonResponse(state)

    def body_view(self, request: HttpRequest) -> JsonResponse:
        """The body of a waiting request (?id=), for the editor; 404 with the reason when there is none to edit."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        request_id = request.GET.get("id", "")
        body = held_body(request_id) if REQUEST_ID.fullmatch(request_id) else None  # a NUL: PostgreSQL's 500
        if body is None or len(body) > BODY_PREVIEW_MAX:
            return JsonResponse({"error": f"request {request_id!r} is no longer waiting, or has no body to edit here"},
                                status=404)
        return JsonResponse({"body": body})

    def switch_view(self, request: HttpRequest) -> JsonResponse:
        """Turn holding on (with the posted filters) or off."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        on = request.POST.get("on") == "1"
        try:
            state = switch_set(on=on, by=request.user.get_username(),
                               provider=request.POST.get("provider", "").strip(),
                               model=request.POST.get("model", "").strip(),
                               gateway_key=request.POST.get("key", "").strip(), path=request.POST.get("path", "").strip())
        except HoldError as exc:
            return JsonResponse({"error": str(exc)}, status=400)
        return JsonResponse({"on": state.on, "filters": state.filters()})

    def decide_view(self, request: HttpRequest) -> JsonResponse:
        """Parse the post with the edited body's limit, then decide (CSRF checked)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        request.upload_handlers.insert(0, EditedBodyLimit(request))
        try:
            request.POST  # noqa: B018 (parsed here: a post too large is answered as the view's other refusals)
        except RequestDataTooBig:
            # A script's edited body posted as a form field over DATA_UPLOAD_MAX_MEMORY_SIZE: Django's bare HTML
            # 400 page, from the CSRF middleware, said nothing of why. The request still waits.
            return JsonResponse({"error": "the post is larger than DATA_UPLOAD_MAX_MEMORY_SIZE "
                                 f"({settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes), the limit of a form field: send "
                                 "the edited body as a file (a multipart upload named body, as the page does), "
                                 "which MAX_REQUEST_BODY_BYTES bounds"}, status=413)
        return csrf_protect(self._decide)(request)

    def _decide(self, request: HttpRequest) -> JsonResponse:
        """Decide one waiting request; 400 with the reason when it cannot be."""
        try:
            body = _edited_body(request)
            decided = held_decide(request.POST.get("id", ""), request.POST.get("decision", ""),
                                  by=request.user.get_username(), body=body if body not in (None, "") else None)
        except HoldError as exc:
            return JsonResponse({"error": str(exc)}, status=400)
        return JsonResponse({"decision": decided.decision, "by": decided.by, "edited": decided.edited_body is not None})

