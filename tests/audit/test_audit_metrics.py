"""``/metrics`` says whether the audit chain held at its last verification and how old the newest
signed checkpoint is: set by the worker's checkpoint schedule and by ``audit_verify``, read from
the shared cache at scrape time (so any web process shows it), the checkpoint's age from the
checkpoint file when the cache has forgotten it; nothing before the first verification."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.cache import cache

from apps.audit import metrics as audit_metrics
from apps.audit import tasks
from apps.audit.services import record_event
from tests.audit.tampering import attack, audit_verify, audit_verify_ok
from tests.support.metrics import local, samples

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _forget_the_last_verification():
    cache.delete(audit_metrics.CACHE_KEY)
    yield
    cache.delete(audit_metrics.CACHE_KEY)


def _names() -> set[str]:
    from medai.metrics import exposition

    return {name for name, _ in samples(exposition().decode())}


def test_nothing_is_exported_before_the_first_verification(settings, tmp_path):
    settings.MEDAI_AUDIT_CHECKPOINT_PATH = str(tmp_path / "none.jsonl")
    names = _names()
    assert "medai_audit_chain_ok" not in names
    assert "medai_audit_checkpoint_age_seconds" not in names


def test_the_schedule_sets_the_chain_ok_and_a_fresh_checkpoint_age(alice):
    record_event("auth.login", actor=alice)
    before = time.time()
    assert tasks.export_checkpoint().startswith("checkpoint seq=")
    assert local("medai_audit_chain_ok") == 1
    assert before - 1 <= local("medai_audit_last_verify_timestamp_seconds") <= time.time()
    # the checkpoint's time is kept to the second: its age is under a few seconds, never negative
    assert 0 <= local("medai_audit_checkpoint_age_seconds") < 30


def test_a_broken_chain_sets_chain_ok_to_zero_and_keeps_the_old_checkpoints_age(alice):
    first = record_event("auth.login", actor=alice)
    assert tasks.export_checkpoint().startswith("checkpoint")
    checkpoint_at = json.loads(cache.get(audit_metrics.CACHE_KEY))["checkpoint_at"]
    record_event("auth.logout", actor=alice)
    attack("UPDATE audit_auditevent SET action = 'x' WHERE seq > %s", [first.seq])
    assert tasks.export_checkpoint().startswith("BROKEN")
    assert local("medai_audit_chain_ok") == 0
    # no checkpoint for a broken chain: the age goes on from the last good one
    assert json.loads(cache.get(audit_metrics.CACHE_KEY))["checkpoint_at"] == checkpoint_at
    assert "medai_audit_checkpoint_age_seconds" in _names()


def test_audit_verify_sets_it_too_and_a_later_good_run_clears_it(alice):
    first = record_event("auth.login", actor=alice)
    audit_verify_ok()
    assert local("medai_audit_chain_ok") == 1
    attack("UPDATE audit_auditevent SET action = 'x' WHERE seq = %s", [first.seq])
    audit_verify()
    assert local("medai_audit_chain_ok") == 0
    attack("UPDATE audit_auditevent SET action = 'auth.login' WHERE seq = %s", [first.seq])
    audit_verify_ok()
    assert local("medai_audit_chain_ok") == 1


def test_the_checkpoint_age_comes_from_the_file_when_the_cache_forgot(settings, tmp_path):
    path = Path(tmp_path / "checkpoints.jsonl")
    settings.MEDAI_AUDIT_CHECKPOINT_PATH = str(path)
    old = (datetime.now(UTC) - timedelta(minutes=20)).isoformat(timespec="seconds")
    newer = (datetime.now(UTC) - timedelta(minutes=10)).isoformat(timespec="seconds")
    path.write_text(
        "".join(json.dumps({"seq": n, "hash": "h", "count": n, "at": at}) + "\n" for n, at in ((1, old), (2, newer)))
        + "not a checkpoint\n"
    )
    age = local("medai_audit_checkpoint_age_seconds")
    assert 600 - 5 <= age <= 600 + 60  # the newest line's, not the first's
    assert "medai_audit_chain_ok" not in _names()  # no verification known: no verdict
