"""How the log browser writes numbers: one format per kind of value, on every page."""

from decimal import Decimal


def ms_format(value: float | None) -> str:
    """Milliseconds up to 10 s ("840 ms"), seconds beyond ("12.4 s"); blank when unknown."""
    if value is None:
        return ""
    return f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"


def count_format(value: int | None) -> str:
    """A token count with thousands separators ("58,779"); blank when unknown (unknown is not 0)."""
    return "" if value is None else f"{value:,}"


def usd_format(value: Decimal | float | None) -> str:
    """Dollars: cents from $1 up, four significant digits below (a call often costs $0.000123)."""
    if value is None:
        return ""
    value = Decimal(value)
    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    digits = max(2, 3 - value.adjusted())  # four significant digits, never scientific notation
    text = f"{value:.{digits}f}".rstrip("0")
    return f"${text}" if len(text.split(".")[1]) >= 2 else f"${value:.2f}"


def usd_exact(value: Decimal | None) -> str:
    """Dollars as stored, for a hover ("$0.00000012", "$0"): never scientific notation, as str() writes below 1e-6."""
    return "" if value is None else f"${Decimal(value).normalize():f}"
