"""Budget periods: calendar day, ISO week (from Monday) or month in UTC, or the key's whole life."""

from datetime import datetime, timedelta, timezone

from keys.models import BudgetPeriod


def period_start(period: str, now: datetime) -> datetime | None:
    """When the period holding `now` began (UTC); None for a total budget."""
    now = now.astimezone(timezone.utc)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == BudgetPeriod.DAY:
        return day
    if period == BudgetPeriod.WEEK:
        return day - timedelta(days=day.weekday())
    if period == BudgetPeriod.MONTH:
        return day.replace(day=1)
    return None


def period_end(period: str, now: datetime) -> datetime | None:
    """When the budget resets: the next period's start; None for a total budget (never)."""
    start = period_start(period, now)
    if start is None:
        return None
    if period == BudgetPeriod.DAY:
        return start + timedelta(days=1)
    if period == BudgetPeriod.WEEK:
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def period_words(period: str) -> str:
    """'per month', 'in total'... for messages."""
    return "in total" if period == BudgetPeriod.TOTAL else f"per {period}"
