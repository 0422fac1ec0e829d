"""The exchange list's cells: what each column shows, and the links that filter the list by a cell's value.

A mixin of RequestAdmin. The default columns fit 1440 px (time, model, status with the error,
latency and TTFT, tokens, cost, key/user, session); the others are offered by the column chooser.
Clicking a model, status, key, user or session narrows the list to it, keeping the other filters.
"""

from urllib.parse import quote

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from logs.admin.filters import filter_value
from logs.admin.formats import count_format, ms_format, usd_exact, usd_format
from logs.models import Request
from logs.outcomes import Outcome

DEFAULT_COLUMNS = ("time", "model_name", "status", "latency", "tokens", "cost", "who", "session")
# Offered by the column chooser, in this order after the default ones.
OPTIONAL_COLUMNS = {
    "provider": "provider", "endpoint_short": "endpoint", "answer_model": "answered by", "ttfb": "TTFB",
    "input_tokens": "input tokens", "output_tokens": "output tokens", "cached_tokens": "cached tokens",
    "reasoning_tokens": "reasoning tokens", "total_tokens": "total tokens", "body_size_total": "body sizes",
    "files_n": "files", "key": "provider key",
}


def _resp(obj: Request):
    """The joined response, or None while the exchange is open."""
    try:
        return obj.response
    except Request.response.RelatedObjectDoesNotExist:
        return None


def _size(n: int) -> str:
    """Bytes, human sized."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def filter_link(obj: Request, param: str, value: str, text: str, title: str = "") -> SafeString:
    """`text` as a link to this list narrowed to param=value (other filters and the sort kept, page reset)."""
    cl = getattr(obj, "list_view", None)
    if cl is None or not value:
        return format_html("{}", text)
    url = cl.get_query_string({param: filter_value(param, value)})  # the page number is never carried over
    return format_html('<a class="cell-filter" href="{}" title="{}">{}</a>', url, title or f"only {param} = {value}",
                       text)


class ListColumns:
    """The list's cells (RequestAdmin inherits them)."""

    @admin.display(description="time", ordering="created_at")
    def time(self, obj: Request) -> SafeString:
        """When the request arrived (UTC), the provider and endpoint beneath."""
        return format_html('{}<br><small class="quiet" title="{}">{} {}</small>', obj.created_at.strftime("%m-%d %H:%M:%S"),
                           obj.endpoint, obj.provider, Truncator(obj.endpoint).chars(28))

    @admin.display(description="model", ordering="model")
    def model_name(self, obj: Request) -> SafeString:
        """The model asked for (a filter link); the one that answered on hover when it differs."""
        asked = obj.model or ""
        resp = _resp(obj)
        answered = (resp.model if resp else "") or ""
        link = filter_link(obj, "model", asked, Truncator(asked).chars(32), f"answered by {answered}" if answered else "")
        if answered and answered != asked and not answered.startswith(asked or "\0"):
            return format_html('{}<br><small class="quiet">→ {}</small>', link, Truncator(answered).chars(32))
        return link

    @admin.display(description="status", ordering="response__status_code")
    def status(self, obj: Request) -> SafeString:
        """HTTP status (a filter link), how it ended when not normally, and the error's first words."""
        resp = _resp(obj)
        if resp is None:
            return format_html('<span class="st st-pending">{}</span>', "pending")
        code = resp.status_code
        cls = "none" if code is None else f"{code // 100}xx"
        shown = format_html('<span class="st st-{}">{}</span>', cls, code if code is not None else "—")
        cell = filter_link(obj, "status", str(code) if code is not None else "", shown, f"only status {code}")
        if resp.outcome != Outcome.COMPLETED:
            cell = format_html('{} <span class="oc oc-{}">{}</span>', cell, resp.outcome, resp.outcome.replace("_", " "))
        error = getattr(obj, "error_short", None) or ""
        if error and resp.is_error:
            cell = format_html('{}<br><small class="err-text" title="{}">{}</small>', cell, error,
                               Truncator(error).chars(60))
        return cell

    @admin.display(description="latency", ordering="response__duration_ms")
    def latency(self, obj: Request) -> SafeString:
        """Total duration; the time to first token (streams) or first byte beneath."""
        resp = _resp(obj)
        if resp is None:
            return format_html("")
        first = (f"TTFT {ms_format(resp.ttft_ms)}" if resp.ttft_ms is not None
                 else f"TTFB {ms_format(resp.ttfb_ms)}" if resp.ttfb_ms is not None else "")
        return format_html('{}<br><small class="quiet">{}{}</small>', ms_format(resp.duration_ms), first,
                           " · stream" if resp.is_stream else "")

    @admin.display(description="tokens", ordering="response__total_tokens")
    def tokens(self, obj: Request) -> SafeString:
        """Total, with input → output beneath (sorted by total)."""
        resp = _resp(obj)
        if resp is None or resp.total_tokens is None and resp.input_tokens is None:
            return format_html("")
        return format_html('{}<br><small class="quiet">{} → {}</small>', count_format(resp.total_tokens),
                           count_format(resp.input_tokens) or "?", count_format(resp.output_tokens) or "?")

    @admin.display(description="cost", ordering="response__cost_usd")
    def cost(self, obj: Request) -> SafeString:
        """Cost from the price table, readable (the stored value on hover); blank when unknown."""
        value = getattr(_resp(obj), "cost_usd", None)
        return format_html("") if value is None else format_html('<span title="{}">{}</span>', usd_exact(value),
                                                                 usd_format(value))

    @admin.display(description="key / user")
    def who(self, obj: Request) -> SafeString:
        """The gateway key's name (else the provider key's fingerprint) and the end user, each a filter link."""
        if obj.gateway_key:
            name = obj.gateway_key.rsplit(" (fp ", 1)[0]
            key = filter_link(obj, "gateway_key", obj.gateway_key, Truncator(name).chars(28), obj.gateway_key)
        elif obj.key_fingerprint:
            key = filter_link(obj, "key", obj.key_fingerprint, format_html("<code>{}</code>", obj.key_fingerprint),
                              "provider key fingerprint")
        else:
            key = format_html("")
        if not obj.end_user:
            return key
        user = filter_link(obj, "user", obj.end_user, Truncator(obj.end_user).chars(28), f"only user {obj.end_user}")
        return format_html("{}<br><small>{}</small>", key, user) if key else user

    @admin.display(description="session")
    def session(self, obj: Request) -> SafeString:
        """The session (a filter link) and a link to its timeline."""
        # ▸ is in every common font (⧉ showed as an empty box with Debian's DejaVu fonts).
        if not obj.session_id:
            return format_html("")
        return format_html('{} <a class="quiet" href="session/?id={}" title="this session in order">▸</a>',
                           filter_link(obj, "session", obj.session_id, Truncator(obj.session_id).chars(20),
                                       f"only session {obj.session_id}"), quote(obj.session_id, safe=""))

    # --- offered by the column chooser
    @admin.display(description="provider")
    def provider(self, obj: Request) -> SafeString:
        """The provider (a filter link)."""
        return filter_link(obj, "provider", obj.provider, obj.provider)

    @admin.display(description="endpoint")
    def endpoint_short(self, obj: Request) -> SafeString:
        """The endpoint, shortened."""
        return format_html('<span title="{}">{}</span>', obj.endpoint, Truncator(obj.endpoint).chars(48))

    @admin.display(description="answered by", ordering="response__model")
    def answer_model(self, obj: Request) -> SafeString:
        """The model the provider reported (often a dated version of the requested one), shortened as the
        requested one is."""
        answered = (getattr(_resp(obj), "model", "") or "")
        return format_html('<span title="{}">{}</span>', answered, Truncator(answered).chars(32))

    @admin.display(description="TTFB", ordering="response__ttfb_ms")
    def ttfb(self, obj: Request) -> str:
        """Time to first byte of the answer."""
        resp = _resp(obj)
        return ms_format(resp.ttfb_ms) if resp else ""

    @admin.display(description="input", ordering="response__input_tokens")
    def input_tokens(self, obj: Request) -> str:
        """Input tokens (including cached ones)."""
        return count_format(getattr(_resp(obj), "input_tokens", None))

    @admin.display(description="output", ordering="response__output_tokens")
    def output_tokens(self, obj: Request) -> str:
        """Output tokens (including reasoning ones)."""
        return count_format(getattr(_resp(obj), "output_tokens", None))

    @admin.display(description="cached", ordering="response__cached_tokens")
    def cached_tokens(self, obj: Request) -> str:
        """Input tokens served from the provider's prompt cache."""
        return count_format(getattr(_resp(obj), "cached_tokens", None))

    @admin.display(description="reasoning", ordering="response__reasoning_tokens")
    def reasoning_tokens(self, obj: Request) -> str:
        """Reasoning (thinking) tokens."""
        return count_format(getattr(_resp(obj), "reasoning_tokens", None))

    @admin.display(description="total", ordering="response__total_tokens")
    def total_tokens(self, obj: Request) -> str:
        """Total tokens."""
        return count_format(getattr(_resp(obj), "total_tokens", None))

    @admin.display(description="bodies")
    def body_size_total(self, obj: Request) -> str:
        """Request + response body sizes."""
        resp = _resp(obj)
        return f"{_size(obj.body_size)} / {_size(resp.body_size)}" if resp else _size(obj.body_size)

    @admin.display(description="files")
    def files_n(self, obj: Request) -> str:
        """Number of stored files."""
        return str(obj.files_n) if getattr(obj, "files_n", 0) else ""

    @admin.display(description="provider key")
    def key(self, obj: Request) -> SafeString:
        """Provider key fingerprint, and the gateway access key's name when one was presented."""
        name = obj.gateway_key.rsplit(" (fp ", 1)[0] if obj.gateway_key else ""
        return format_html('<code title="provider key fingerprint">{}</code>{}', obj.key_fingerprint or "",
                           format_html('<br><small title="{}">{}</small>', obj.gateway_key, Truncator(name).chars(28))
                           if name else "")
