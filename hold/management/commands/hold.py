"""python manage.py hold on [--provider P] [--model M] [--key NAME] [--path PREFIX] | off | status | list |
decide REQUEST_ID approve|reject-400|reject-500|content-policy [--body-file F]."""

import getpass
import socket
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hold.models import Decision
from hold.selectors import held_waiting, switch_read
from hold.services import HoldError, edited_body_size_check, held_decide, switch_set


def _who() -> str:
    """Who decided, as the log shows it: the command, its user and host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"command ({user}@{socket.gethostname()})"


class Command(BaseCommand):
    help = "Hold matching requests until an operator decides: switch, list, decide."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        on = sub.add_parser("on", help="hold every request, or only those matching the filters")
        on.add_argument("--provider", help="a provider's name, e.g. openai")
        on.add_argument("--model", help="the requested model, exactly")
        on.add_argument("--key", help="a gateway key's name")
        on.add_argument("--path", help="a gateway path prefix, e.g. /v1/chat/")
        sub.add_parser("off", help="stop holding; requests still waiting are approved")
        sub.add_parser("status", help="on or off, the filters, how many wait")
        sub.add_parser("list", help="the waiting requests' ids, one a line, oldest first")
        decide = sub.add_parser("decide", help="decide a waiting request")
        decide.add_argument("request_id", help="a waiting request's id, as `list` prints it")
        decide.add_argument("decision", choices=Decision.values)
        decide.add_argument("--body-file", type=Path, help="with approve: forward this JSON body instead")

    def handle(self, *args, action: str, **options) -> None:
        if action == "on":
            filters = {name: options[name] for name in ("provider", "model", "key", "path")}
            for name, value in filters.items():
                # `hold on --model "$MODEL"`, MODEL unset: every request of every client held, not that model's
                if value is not None and not value.strip():
                    raise CommandError(f"--{name} is empty (an unset variable?): leave it out to hold every request")
            filters = {name: (value or "").strip() for name, value in filters.items()}
            try:
                state = switch_set(on=True, by=_who(), provider=filters["provider"], model=filters["model"],
                                   gateway_key=filters["key"], path=filters["path"])
            except HoldError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(self._status(state))
        elif action == "off":
            self.stdout.write(self._status(switch_set(on=False, by=_who())))
        elif action == "status":
            self.stdout.write(self._status(switch_read()))
        elif action == "list":
            for rid in held_waiting().values_list("id", flat=True):
                self.stdout.write(rid)
        else:
            body = None
            if options["body_file"] is not None:
                try:
                    # Not read whole when it could never go (a file of gigabytes held in memory first).
                    edited_body_size_check(options["body_file"].stat().st_size)
                    # utf-8-sig: a file saved by Windows' Notepad starts with a BOM, which JSON refuses.
                    body = options["body_file"].read_text(encoding="utf-8-sig")
                except (OSError, UnicodeDecodeError) as exc:
                    raise CommandError(f"cannot read {options['body_file']}: {exc}") from None
                except HoldError as exc:
                    raise CommandError(f"{options['body_file']}: {exc}") from None
            try:
                held_decide(options["request_id"], options["decision"], by=_who(), body=body)
            except HoldError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"{options['request_id']}: {options['decision']}"
                              + (" with the edited body" if body is not None else ""))

    def _status(self, state) -> str:
        if not state.on:
            return "hold: off"
        filters = ", ".join(f"{k}={v}" for k, v in state.filters().items()) or "every request"
        return f"hold: on ({filters}); {held_waiting().count()} waiting"
