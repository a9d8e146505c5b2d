"""The scope rename (migration 0004) keeps every existing key's rights: inference became chat and
submit, read became read and gpu:read (GPU status was under read), audit became audit:read; and
it runs backwards."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from apps.accounts.models import ApiKey

pytestmark = pytest.mark.django_db

migration = importlib.import_module("apps.accounts.migrations.0004_keys_sessions_break_glass")


def key_with(user, location, scopes: list[str], n: int) -> ApiKey:
    return ApiKey.objects.create(
        user=user, location=location, name=f"k{n}", prefix=f"mk_{n:08x}", hashed_secret=f"{n:064x}", scopes=scopes
    )


def test_old_scopes_become_the_same_rights_under_the_new_names(admin_user, demo):
    old = {
        1: ["inference"],
        2: ["read"],
        3: ["inference", "read", "audit"],
        4: [],  # the role's defaults: nothing to rename
    }
    for n, scopes in old.items():
        key_with(admin_user, demo, scopes, n)
    migration.rename_scopes(apps, None)
    renamed = dict(ApiKey.objects.values_list("name", "scopes"))
    assert renamed == {
        "k1": ["chat", "submit"],
        "k2": ["read", "gpu:read"],
        "k3": ["chat", "submit", "read", "gpu:read", "audit:read"],
        "k4": [],
    }
    migration.restore_scopes(apps, None)
    restored = dict(ApiKey.objects.values_list("name", "scopes"))
    assert restored == {"k1": ["inference"], "k2": ["read"], "k3": ["inference", "read", "audit"], "k4": []}
