"""Signed checkpoints of the chain's head leave the database: appended to the checkpoint file,
logged as one structured line and POSTed to the webhook, by every audit_verify and by the
worker's schedule (which verifies only what came since the last one); a checkpoint line someone
edited is reported, and a broken chain gets no checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from django_q.models import Schedule

from apps.audit import checkpoints, tasks
from apps.audit.services import record_event
from tests.audit.tampering import attack, audit_verify, audit_verify_ok
from tests.support.servers import free_port

pytestmark = pytest.mark.django_db


def lines(settings) -> list[dict]:
    path = Path(settings.MEDAI_AUDIT_CHECKPOINT_PATH)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_audit_verify_exports_a_signed_checkpoint_to_the_file_and_the_log(alice, settings, caplog):
    record_event("auth.login", actor=alice)
    last = record_event("auth.logout", actor=alice)
    with caplog.at_level(logging.INFO, logger="medai.audit.checkpoint"):
        out = audit_verify_ok()
    assert f"checkpoint seq={last.seq}" in out
    [cp] = lines(settings)
    assert (cp["seq"], cp["hash"], cp["count"]) == (last.seq, last.hash, 2)
    assert checkpoints.Checkpoint(**cp).signature_ok() is True
    assert oct(Path(settings.MEDAI_AUDIT_CHECKPOINT_PATH).stat().st_mode & 0o777) == "0o600"
    [logged] = [r for r in caplog.records if r.name == "medai.audit.checkpoint"]
    assert json.loads(logged.getMessage().removeprefix("audit checkpoint ")) == cp


def test_the_checkpoint_is_posted_to_the_webhook(alice, settings):
    import http.server
    import threading

    received: list[bytes] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", free_port()), Hook)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    settings.MEDAI_AUDIT_CHECKPOINT_WEBHOOK = f"http://127.0.0.1:{server.server_port}/audit"
    record_event("auth.login", actor=alice)
    assert "webhook" in audit_verify_ok()
    thread.join(10)
    server.server_close()
    assert [json.loads(r) for r in received] == lines(settings)


def test_the_schedule_verifies_since_the_last_checkpoint_and_exports_the_next(alice, settings):
    assert Schedule.objects.filter(func="apps.audit.tasks.export_checkpoint", minutes=5).exists()
    record_event("auth.login", actor=alice)
    assert tasks.export_checkpoint().startswith("checkpoint seq=")
    last = record_event("auth.logout", actor=alice)
    assert tasks.export_checkpoint() == f"checkpoint seq={last.seq} count=2"
    assert [cp["count"] for cp in lines(settings)] == [1, 2]


def test_the_schedule_exports_nothing_for_a_broken_chain(alice, settings):
    first = record_event("auth.login", actor=alice)
    assert tasks.export_checkpoint().startswith("checkpoint")
    record_event("auth.logout", actor=alice)
    attack("UPDATE audit_auditevent SET action = 'x' WHERE seq > %s", [first.seq])
    assert tasks.export_checkpoint().startswith("BROKEN at seq=")
    assert len(lines(settings)) == 1


def test_an_edited_checkpoint_line_is_reported(alice, settings):
    record_event("auth.login", actor=alice)
    audit_verify_ok()
    path = Path(settings.MEDAI_AUDIT_CHECKPOINT_PATH)
    cp = json.loads(path.read_text())
    cp["count"] = 99
    path.write_text(json.dumps(cp) + "\n")
    assert "line 1: its signature does not match" in audit_verify()
