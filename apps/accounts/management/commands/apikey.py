"""``manage.py apikey``: API keys for IT scripts, the same verbs as the admin (apps/accounts/apikeys.py).

    apikey create --user U --location L [--name N] [--scopes chat,read] [--expires-days D]
    apikey revoke PREFIX
    apikey rotate PREFIX [--grace-hours H]
    apikey list [--user U] [--location L] [--all]

``create`` and ``rotate`` print the new secret once, alone on the last line of stdout (so that
``$(manage.py apikey create ... | tail -1)`` captures it); it is never retrievable again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q
from django.utils import timezone

from apps.accounts.apikeys import ApiKeyError, create_api_key, revoke_api_key, rotate_api_key
from apps.accounts.models import ApiKey, Location, User


class Command(BaseCommand):
    help = "Create, revoke, rotate and list API keys."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        create = sub.add_parser("create", help="Create a key; prints its secret once.")
        create.add_argument("--user", required=True, help="username")
        create.add_argument("--location", required=True, help="location code")
        create.add_argument("--name", default="", help="what the key is for (default: 'cli key')")
        create.add_argument("--scopes", default="", help="comma-separated, e.g. chat,read (default: the role's)")
        create.add_argument("--expires-days", type=int, default=None, help="default: MEDAI_API_KEY_TTL_DAYS (90)")
        revoke = sub.add_parser("revoke", help="Revoke a key at once.")
        revoke.add_argument("prefix")
        rotate = sub.add_parser("rotate", help="Issue a new secret; the old one works for the grace period.")
        rotate.add_argument("prefix")
        rotate.add_argument("--grace-hours", type=float, default=None, help="default: 24 (0: revoke the old at once)")
        listing = sub.add_parser("list", help="List keys (prefix, user, location, scopes, state, expiry, last use).")
        listing.add_argument("--user", default=None)
        listing.add_argument("--location", default=None)
        listing.add_argument("--all", action="store_true", help="include revoked and expired keys")

    def handle(self, *args: Any, verb: str, **options: Any) -> None:
        try:
            getattr(self, f"_{verb}")(**options)
        except ApiKeyError as exc:
            raise CommandError(str(exc)) from None

    def _key(self, prefix: str) -> ApiKey:
        try:
            return ApiKey.objects.by_prefix(prefix)
        except ApiKey.DoesNotExist:
            raise CommandError(f"no API key with prefix {prefix!r}") from None

    def _create(self, *, user: str, location: str, name: str, scopes: str, expires_days: int | None, **_: Any) -> None:
        owner = User.objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"--user: no user {user!r}")
        place = Location.objects.filter(code=location).first()
        if place is None:
            raise CommandError(f"--location: no location {location!r}")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days: 1 or more")
        wanted = [s.strip() for s in scopes.split(",") if s.strip()]
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        key, secret = create_api_key(
            owner, name=name or "cli key", location=place, scopes=wanted, expires_at=expires_at
        )
        self.stderr.write(
            f"created {key.prefix} for {owner.username} at {place.code}, scopes "
            f"{','.join(key.scopes) or '(role default)'}, expires {key.expires_at:%Y-%m-%d %H:%M} UTC. "
            "The secret follows; it will not be shown again."
        )
        self.stdout.write(secret)

    def _revoke(self, *, prefix: str, **_: Any) -> None:
        key = self._key(prefix)
        revoke_api_key(key)
        self.stdout.write(f"revoked {key.prefix}")

    def _rotate(self, *, prefix: str, grace_hours: float | None, **_: Any) -> None:
        key = self._key(prefix)
        new_key, secret = rotate_api_key(key, grace_hours=grace_hours)
        key.refresh_from_db()
        until = "now (revoked)" if key.revoked_at else f"until {key.expires_at:%Y-%m-%d %H:%M} UTC"
        self.stderr.write(
            f"rotated {key.prefix} -> {new_key.prefix}; the old secret works {until}. "
            "The new secret follows; it will not be shown again."
        )
        self.stdout.write(secret)

    def _list(self, *, user: str | None, location: str | None, all: bool, **_: Any) -> None:
        keys = ApiKey.objects.select_related("user", "location").order_by("created_at")
        if user:
            keys = keys.filter(user__username=user)
        if location:
            keys = keys.filter(location__code=location)
        if not all:
            keys = keys.filter(revoked_at__isnull=True).filter(
                Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
            )
        self.stdout.write("prefix\tuser\tlocation\tscopes\tstate\texpires\tlast_used\tname")
        for k in keys:
            self.stdout.write(
                "\t".join(
                    [
                        k.prefix,
                        k.user.username,
                        k.location.code,
                        ",".join(k.scopes) or "(role default)",
                        k.state,
                        f"{k.expires_at:%Y-%m-%dT%H:%MZ}" if k.expires_at else "-",
                        f"{k.last_used_at:%Y-%m-%dT%H:%MZ}" if k.last_used_at else "never",
                        k.name,
                    ]
                )
            )
