"""How an exchange ended: shared by the proxy (which decides) and the log (which stores). No Django here."""

from enum import StrEnum


class Outcome(StrEnum):
    COMPLETED = "completed"  # the upstream's answer reached the client whole (whatever its status)
    UPSTREAM_ERROR = "upstream_error"  # unreachable, timed out, or broke off mid-answer
    CLIENT_ABORTED = "client_aborted"  # the client went away first
    GATEWAY_ERROR = "gateway_error"  # the gateway answered itself (413, 405, 401, a step's refusal...)
    INTERRUPTED = "interrupted"  # the gateway stopped (shutdown grace over, or a crash) mid-exchange
    RATE_LIMITED = "rate_limited"  # a gateway key over a limit (requests, tokens or budget): refused, not forwarded
