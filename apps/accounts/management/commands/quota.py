"""``manage.py quota``: quotas for IT's scripts, the same service as the admin's.

manage.py quota set --location demo --period day --requests 1000 [--tokens 500000]
manage.py quota set --organization "Demo Hospital" --period month --tokens 10000000
manage.py quota list [--location demo | --organization NAME]
manage.py quota clear --location demo [--period day]
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.governance import quotas
from apps.accounts.models import Quota


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


class Command(BaseCommand):
    help = "Set, list or clear request and token quotas of a location or an organization."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        for name in ("set", "list", "clear"):
            p = sub.add_parser(name)
            scope = p.add_mutually_exclusive_group(required=name != "list")
            scope.add_argument("--location", help="the location's code")
            scope.add_argument("--organization", help="the organization's name")
            if name != "list":
                p.add_argument("--period", choices=Quota.Period.values, required=name == "set")
            if name == "set":
                p.add_argument("--requests", type=int, help="requests per period (omit: no request limit)")
                p.add_argument("--tokens", type=int, help="prompt + completion tokens per period (omit: no limit)")

    def handle(self, *args: Any, **options: Any) -> None:
        scope = {"location": options.get("location"), "organization": options.get("organization")}
        try:
            if options["action"] == "set":
                quota = quotas.set_quota(
                    period=options["period"], requests=options["requests"], tokens=options["tokens"], **scope
                )
                self.stdout.write(f"set: {quota}")
            elif options["action"] == "clear":
                removed = quotas.clear_quota(period=options.get("period"), **scope)
                self.stdout.write(f"cleared {removed} quota(s)")
            else:
                self._list(scope)
        except quotas.QuotaError as exc:
            raise CommandError(str(exc)) from None

    def _list(self, scope: dict[str, str | None]) -> None:
        views = quotas.list_quotas(**scope)
        if not views:
            self.stdout.write("no quotas")
            return
        self.stdout.write(f"{'scope':<40} {'period':<6} {'requests':>17} {'tokens':>23}")
        for v in views:
            q = v.quota
            self.stdout.write(
                f"{v.scope:<40} {q.period:<6} {f'{v.used_requests}/{_limit(q.max_requests)}':>17} "
                f"{f'{v.used_tokens}/{_limit(q.max_tokens)}':>23}"
            )
