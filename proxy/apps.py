"""App config for the forwarding side."""

from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"
    verbose_name = "Gateway proxy"

    def ready(self) -> None:
        """Register the deploy checks for the admin-only middleware stack."""
        from proxy import checks  # noqa: F401
