"""The export actions' download: the chosen exchanges through the export service, streamed."""

from datetime import datetime, timezone

from django.http import HttpRequest, StreamingHttpResponse

from logs.admin.views import streaming
from logs.export import CONTENT_TYPES, export_chunks
from logs.models import Request
from logs.selectors import ExportFilters, exchanges_for_export


def export_response(request: HttpRequest, queryset, fmt: str) -> StreamingHttpResponse:
    """The selected exchanges as a JSONL or CSV download."""
    qs = exchanges_for_export(ExportFilters(), qs=Request.objects.filter(pk__in=queryset.values("pk")))
    response = streaming(request, export_chunks(qs, fmt), CONTENT_TYPES[fmt], thread_sensitive=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="exchanges-{stamp}.{fmt}"'
    return response
