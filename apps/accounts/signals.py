"""What a change to a user, a membership, a location, a key or a grant does to credentials.

Wherever the change comes from (admin, a shell, a management command, a service), the rules
hold because they hang on the models' signals:

| change | JWTs | API keys |
|---|---|---|
| password changed | all of the user's end (token generation +1) | kept: keys are separate credentials, minted by an admin, not derived from the password; a routine password change must not break integrations |
| user deactivated | all end, and stay ended if the user is reactivated | all revoked (a reactivation does not revive them) |
| removed from a location | those at that location stop (membership is checked on every use) | the user's keys at that location are revoked |
| location deactivated | stop while it is inactive | stop while it is inactive |
| any change to these rows | every process's caches are dropped at once; the users' open websockets check their credentials again (4401 if gone) | |
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone

from apps.accounts import authcache, revocation
from apps.accounts.models import ApiKey, BreakGlassGrant, Location, User
from apps.accounts.services import revoke_sessions
from apps.audit.services import record_event

# Saves that change nothing authentication reads (Django's own last-login update on admin login).
_IRRELEVANT_FIELDS = frozenset({"last_login"})


def _relevant(update_fields: Any) -> bool:
    return update_fields is None or not set(update_fields) <= _IRRELEVANT_FIELDS


def changed(user_ids: Any = ()) -> None:
    """Drop every process's authentication caches; ask these users' sockets to check again."""
    authcache.invalidate()
    revocation.notify_many(user_ids)


def revoke_keys(keys: Any, reason: str) -> None:
    """Revoke these keys (a queryset), one audit event each."""
    now = timezone.now()
    for key in keys.filter(revoked_at__isnull=True).select_related("location"):
        ApiKey.objects.filter(pk=key.pk).update(revoked_at=now)
        record_event(
            "apikey.revoke",
            location=key.location.code,
            obj=key,
            api_key_id=key.pk,
            details={"prefix": key.prefix, "reason": reason},
        )


@receiver(pre_save, sender=User)
def _note_user_change(sender: type[User], instance: User, update_fields: Any = None, **kwargs: Any) -> None:
    instance._auth_reasons = []  # type: ignore[attr-defined]
    if instance.pk is None or not _relevant(update_fields):
        return
    # set_password() keeps the new raw password in _password until the save; a login that only
    # upgrades the hash clears it before saving, so that is not a password change.
    if getattr(instance, "_password", None) is not None:
        instance._auth_reasons.append("password changed")  # type: ignore[attr-defined]
    if not instance.is_active and User.objects.filter(pk=instance.pk, is_active=True).exists():
        instance._auth_reasons.append("deactivated")  # type: ignore[attr-defined]


@receiver(post_save, sender=User)
def _user_saved(sender: type[User], instance: User, created: bool, update_fields: Any = None, **kwargs: Any) -> None:
    if created or not _relevant(update_fields):
        return
    reasons: list[str] = getattr(instance, "_auth_reasons", [])
    instance._auth_reasons = []  # type: ignore[attr-defined]
    if reasons:
        with transaction.atomic():
            revoke_sessions(instance, reason=", ".join(reasons))
            if "deactivated" in reasons:
                revoke_keys(ApiKey.objects.filter(user=instance), "user deactivated")
    changed([instance.pk])


@receiver(post_delete, sender=User)
def _user_deleted(sender: type[User], instance: User, **kwargs: Any) -> None:
    changed([instance.pk])


@receiver(m2m_changed, sender=User.locations.through)
def _membership_changed(
    sender: Any, instance: User | Location, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    if action == "pre_clear":
        # pk_set is None on clear: remember who was a member, for post_clear.
        members = instance.users.all() if reverse else instance.locations.all()  # type: ignore[union-attr]
        instance._cleared_pks = set(members.values_list("pk", flat=True))  # type: ignore[union-attr]
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    pks = set(pk_set or ()) if action != "post_clear" else getattr(instance, "_cleared_pks", set())
    if action != "post_add":
        if reverse:  # location.users.remove(...): instance is the location, pks are users
            keys = ApiKey.objects.filter(location_id=instance.pk, user_id__in=pks)
            users = pks
        else:  # user.locations.remove(...): instance is the user, pks are locations
            keys = ApiKey.objects.filter(user_id=instance.pk, location_id__in=pks)
            users = {instance.pk}
        revoke_keys(keys, "user removed from the key's location")
    else:
        users = pks if reverse else {instance.pk}
    changed(users)


def _users_of(location: Location) -> set[int]:
    ids = set(location.users.values_list("pk", flat=True))
    ids |= set(ApiKey.objects.filter(location=location).values_list("user_id", flat=True))
    ids |= set(BreakGlassGrant.objects.filter(location=location).values_list("user_id", flat=True))
    return ids


@receiver(post_save, sender=Location)
def _location_saved(sender: type[Location], instance: Location, created: bool, **kwargs: Any) -> None:
    if not created:
        changed(_users_of(instance))


@receiver(post_save, sender=ApiKey)
@receiver(post_delete, sender=ApiKey)
@receiver(post_save, sender=BreakGlassGrant)
@receiver(post_delete, sender=BreakGlassGrant)
def _credential_changed(sender: Any, instance: ApiKey | BreakGlassGrant, **kwargs: Any) -> None:
    changed([instance.user_id])
