"""The admin for gateway keys: the list with this period's use, a key's page with its use over time.

A new key's secret is shown once, on the page that answers the form that created it: it is never
stored (not in a message cookie nor in the session), only its hash.
"""

from decimal import Decimal
from urllib.parse import urlencode

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from keys.forms import GatewayKeyForm
from keys.limits import usd_text
from keys.models import BudgetPeriod, GatewayKey
from keys.present import last_used_text, pruned_note
from keys.selectors import key_activity, key_history, keys_activity
from keys.services import key_credential_set, secret_assign
from logs.admin.charts import bar_chart
from logs.admin.filters import RANGE_FROM


# What the key's page calls its budget period, before its use in it.
PERIOD_LABELS = {BudgetPeriod.DAY: "Today (UTC)", BudgetPeriod.WEEK: "This week (from Monday, UTC)",
                 BudgetPeriod.MONTH: "This month (UTC)", BudgetPeriod.TOTAL: "In total"}


@admin.register(GatewayKey)
class GatewayKeyAdmin(admin.ModelAdmin):
    form = GatewayKeyForm
    list_display = ("name", "secret_hint", "state", "limits", "requests_this_period", "spend_this_period",
                    "remaining_budget", "last_used")
    list_filter = ("active", "budget_period")
    search_fields = ("name",)
    list_per_page = 50  # the page's rows read their use from the log (keys_activity)
    actions = ["revoke"]
    fieldsets = (
        (None, {"fields": ("name", "active", "expires_at")}),
        ("What it may call", {"fields": ("allowed_providers", "allowed_models")}),
        ("Limits", {"fields": ("rpm", "tpm", "budget_usd", "budget_period")}),
        ("Response cache", {"fields": ("cache_ttl",)}),
        ("Provider credential", {"fields": ("new_provider_credential", "remove_provider_credential")}),
    )

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        # Only the list's own filters (a 400 for others): Django lets any lookup on a field through,
        # and one it cannot turn into SQL (?created_at__year=99999) failed as a 500.
        return lookup.split("__")[0] in self.list_filter and super().lookup_allowed(lookup, value, request)

    def get_readonly_fields(self, request, obj=None):
        # The log names a key by its name: renaming would split its history (and its spend).
        return ("name",) if obj is not None else ()

    def get_changelist_instance(self, request):
        """As Django's; the page's keys read their use together (each key read alone cost five queries)."""
        cl = super().get_changelist_instance(request)
        keys = list(cl.result_list)  # the page's rows, kept by the queryset for the template
        uses = keys_activity(keys)
        for key in keys:
            key.use = uses[key.pk]
        return cl

    def _use(self, key: GatewayKey):
        """The key's use, read with its page's (a key's own page: read alone)."""
        return getattr(key, "use", None) or key_activity(key)

    @admin.display(description="state")
    def state(self, key: GatewayKey) -> str:
        if not key.active:
            return "revoked"
        if key.expires_at is not None and key.expires_at <= timezone.now():
            return "expired"
        return f"active until {key.expires_at:%Y-%m-%d}" if key.expires_at else "active"

    @admin.display(description="limits")
    def limits(self, key: GatewayKey) -> str:
        parts = [f"{key.rpm} req/min" if key.rpm else "", f"{key.tpm} tok/min" if key.tpm else "",
                 f"{usd_text(key.budget_usd)}/{key.budget_period}" if key.budget_usd is not None else ""]
        return ", ".join(p for p in parts if p) or "none"

    @admin.display(description="requests this period")
    def requests_this_period(self, key: GatewayKey):
        # The number links to the exchanges it counts: this period's, not the key's whole history.
        use = self._use(key)
        query = {"gateway_key": key.label, **({RANGE_FROM: use.since.isoformat()} if use.since else {})}
        url = reverse("admin:logs_request_changelist") + "?" + urlencode(query)
        return format_html('<a href="{}">{}</a>', url, use.requests)

    @admin.display(description="spend this period")
    def spend_this_period(self, key: GatewayKey) -> str:
        use = self._use(key)
        return f"{usd_text(use.spend)} ({note})" if (note := pruned_note(use)) else usd_text(use.spend)

    @admin.display(description="remaining budget")
    def remaining_budget(self, key: GatewayKey) -> str:
        if key.budget_usd is None:
            return "no budget"
        return usd_text(max(key.budget_usd - self._use(key).spend, Decimal(0)))

    @admin.display(description="last used")
    def last_used(self, key: GatewayKey) -> str:
        return last_used_text(self._use(key))

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        count = queryset.filter(active=True).update(active=False, revoked_at=timezone.now(), updated_at=timezone.now())
        self.message_user(request, f"revoked {count} key(s): refused on every worker within a second")

    def save_model(self, request, obj: GatewayKey, form, change):
        if not change:
            request._gateway_key_secret = secret_assign(obj)  # shown once by response_add, never stored
        if obj.active is False and obj.revoked_at is None:
            obj.revoked_at = timezone.now()
        elif obj.active:
            obj.revoked_at = None
        super().save_model(request, obj, form, change)
        if form.cleaned_data.get("remove_provider_credential"):
            key_credential_set(obj, "")
        elif form.cleaned_data.get("new_provider_credential"):
            key_credential_set(obj, form.cleaned_data["new_provider_credential"])

    def response_add(self, request, obj, post_url_continue=None):
        secret = getattr(request, "_gateway_key_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        context = {**self.admin_site.each_context(request), "opts": self.opts, "key": obj, "secret": secret,
                   "title": f"Gateway key {obj.name} created"}
        response = TemplateResponse(request, "admin/keys/gatewaykey/created.html", context)
        response["Cache-Control"] = "no-store"  # the secret must not stay in a browser or proxy cache
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        key = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if key is not None:
            days = key_history(key)
            labels = [d["day"].strftime("%m-%d") for d in days]
            use = self._use(key)
            remaining = None if key.budget_usd is None else max(key.budget_usd - use.spend, Decimal(0))
            extra.update({
                # Amounts as every other place shows them (usd_text): a 6-place rounding showed $0.00000123 as
                # $0.000001 and a remaining $0.0099496 as $0.009950, beside the list's exact figures.
                # A day none of whose exchanges was priced has no known spend: "–", not $0.000000.
                "usage_days": [{**d, "spend_text": usd_text(d["spend"]) if d["priced"] else "–"} for d in days],
                "usage_charts": [bar_chart("Requests per day", labels, [d["requests"] for d in days]),
                                 bar_chart("Tokens per day", labels, [d["tokens"] for d in days]),
                                 bar_chart("Spend per day", labels, [float(d["spend"]) for d in days], " USD")],
                "usage_now": use, "key_label": key.label, "spend_text": usd_text(use.spend),
                "pruned_note": pruned_note(use), "last_used_text": last_used_text(use),
                "period_label": PERIOD_LABELS.get(key.budget_period, key.budget_period),
                "exchanges_url": reverse("admin:logs_request_changelist") + "?" + urlencode({"gateway_key": key.label}),
                "unpriced_url": reverse("admin:logs_request_changelist") + "?" + urlencode(
                    {"gateway_key": key.label, "cost": "unknown", **({RANGE_FROM: use.since.isoformat()} if use.since else {})}),
                "remaining_text": None if remaining is None else usd_text(remaining),
            })
        return super().change_view(request, object_id, form_url, extra)
