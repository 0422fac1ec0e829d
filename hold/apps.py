"""App config for the hold queue."""

from django.apps import AppConfig


class HoldConfig(AppConfig):
    name = "hold"
    verbose_name = "Hold queue"
    default_auto_field = "django.db.models.BigAutoField"
