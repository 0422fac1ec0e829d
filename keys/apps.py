"""App config for gateway keys."""

from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"
    verbose_name = "Gateway keys"
    default_auto_field = "django.db.models.BigAutoField"
