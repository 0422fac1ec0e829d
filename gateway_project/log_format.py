"""The console's line format, which the settings' LOGGING names."""

import logging
import time


class ConsoleFormatter(logging.Formatter):
    """Each line starts with its UTC time (ISO 8601, milliseconds), level and logger name.

    Without them a warning (a dead CACHE_URL, a missing PRICE_TABLE_PATH) could not be told from
    other output in a server log, nor dated; UTC so that hosts in different zones agree.
    """

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"
