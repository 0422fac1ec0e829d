"""What the hold queue hands the proxy and the admin: the switch as read, and a decision."""

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SwitchState:
    """The switch as last read: on or off, and the filters a request must match (empty: any)."""

    on: bool = False
    provider: str = ""
    model: str = ""
    gateway_key: str = ""
    path: str = ""

    def filters(self) -> dict[str, str]:
        """The filters that are set, by name."""
        return {k: v for k, v in (("provider", self.provider), ("model", self.model),
                                  ("key", self.gateway_key), ("path", self.path)) if v}


@dataclass(frozen=True)
class Decided:
    """A held request's decision: what, by whom, when, and the edited body when there is one."""

    decision: str
    by: str
    at: datetime
    edited_body: str | None = None
