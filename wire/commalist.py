"""A list of names or values written on one line, separated by commas: a value's own comma is written "\\,"
and its backslash "\\\\" (a model named "org/model,v2" read as two). A backslash before anything else is itself,
so a list whose values hold no comma or backslash reads as it always did. The exchange list's filter parameters
(?model=a,b) and the gateway key form's and command's lists of models and providers are written this way."""

import re

_TOKEN = re.compile(r"\\[\\,]|,|[^\\,]+|\\")


def commalist_read(text: str) -> list[str]:
    """The values of a line, in order, each once; empty ones dropped (the caller strips what it wants stripped)."""
    values, part = [], []
    for token in _TOKEN.findall(text):
        if token == ",":
            values.append("".join(part))
            part = []
        else:
            part.append(token[1] if token in ("\\,", "\\\\") else token)
    values.append("".join(part))
    return list(dict.fromkeys(v for v in values if v))


def commalist_write(values: list[str], sep: str = ",") -> str:
    """The line naming these values (read back by commalist_read); sep: ", " for a person to read."""
    return sep.join(v.replace("\\", "\\\\").replace(",", "\\,") for v in values)
