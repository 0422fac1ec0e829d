"""Logging filters the settings' LOGGING names."""

import logging


class SuspiciousBrief(logging.Filter):
    """A suspicious request (a Host outside ALLOWED_HOSTS, a form over Django's limits) as one warning line.

    Django logs each at ERROR with its traceback, some twenty lines that say nothing the message does
    not: with ALLOWED_HOSTS set, every scanner that names the server's address filled the console.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class HealthProbeQuiet(logging.Filter):
    """Drops django.request's "Service Unavailable: /health" line, one per probe: a load balancer probing every
    few seconds filled the console while the database was down. proxy/health.py logs the reason once per change."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        return not (getattr(record, "status_code", None) == 503 and getattr(request, "path", None) == "/health")
