"""App config for the forwarding side."""

from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"
    verbose_name = "Gateway proxy"

    def ready(self) -> None:
        """Load GATEWAY_HOOKS now: a bad entry stops the start (ImproperlyConfigured naming it)."""
        from proxy.hooks import hooks_loaded

        hooks_loaded()
