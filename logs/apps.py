"""App config for the audit log."""

from django.apps import AppConfig


class LogsConfig(AppConfig):
    name = "logs"
    verbose_name = "Gateway logs"
    default_auto_field = "django.db.models.BigAutoField"
