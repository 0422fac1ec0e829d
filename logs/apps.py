"""App config for the audit log."""

from django.apps import AppConfig


class LogsConfig(AppConfig):
    name = "logs"
    verbose_name = "Gateway logs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Scrub credentials from console log lines in every process that loads Django."""
        from logs.redaction.console import console_redaction_install

        console_redaction_install()
