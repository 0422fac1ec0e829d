"""How a key's use reads in the admin and in `manage.py gateway_key list`: one wording for both."""

from keys.limits import usd_text
from keys.selectors import KeyActivity


def pruned_note(use: KeyActivity) -> str:
    """What of the period's spend was by exchanges deleted from the log, or "": without it, a key whose
    exchanges were pruned read "0 requests, $9.50 spent" (the spend is kept for its budget, the rows are not)."""
    if not use.pruned_spend:
        return ""
    return f"{usd_text(use.pruned_spend)} of it by exchanges deleted from the log (prune_logs), not among the requests"


def last_used_text(use: KeyActivity) -> str:
    """The newest exchange in the log; else the last day an exchange deleted from the log cost something; else
    never (a key used, then pruned, read "never")."""
    if use.last_used is not None:
        return use.last_used.strftime("%Y-%m-%d %H:%M")
    if use.pruned_last_day is not None:
        return f"{use.pruned_last_day:%Y-%m-%d} (its exchanges since deleted from the log)"
    return "never"
