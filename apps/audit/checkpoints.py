"""Signed checkpoints of the audit chain's head, exported outside the database.

The keyed chain (apps/audit/chain.py) stops anyone without the audit key from editing, inserting
or rewriting events unnoticed; it cannot, by itself, show that the newest events were cut off and
the head row rewound to an older state someone kept, nor that the whole table was emptied. What
does is a record outside the database of what the chain was: a checkpoint ``{seq, hash, count, at,
key_id, sig}`` of its head, signed with HMAC-SHA256 under the audit key (so the checkpoints cannot be
forged either), sent to three places a database writer does not reach:

* appended to a JSONL file (``MEDAI_AUDIT_CHECKPOINT_PATH``, default ``<var dir>/audit-checkpoints.jsonl``;
  in production, put it on storage the database's operators cannot rewrite, or ship it);
* one structured log line on the ``medai.audit.checkpoint`` logger (for the log pipeline to keep);
* a POST of the same JSON to ``MEDAI_AUDIT_CHECKPOINT_WEBHOOK`` when it is set (a SIEM, a ticket).

They are written every 5 minutes by the worker's "audit: checkpoint" schedule (which first
verifies the events since the last checkpoint) and by every run of ``manage.py audit_verify``
(after a full verification): never for a chain that fails verification. ``audit_verify`` reads
the file back and holds the chain to every checkpoint in it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from django.conf import settings
from django.utils import timezone

from apps.audit import chain, keys
from apps.audit import metrics as audit_metrics
from apps.audit.chain import Mark, Report

logger = logging.getLogger("medai.audit.checkpoint")

VERSION = 1
DOMAIN = b"medai-audit-checkpoint-v1"
WEBHOOK_TIMEOUT = 5.0


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    count: int
    at: str
    key_id: str
    sig: str = ""
    v: int = VERSION

    def _signed(self) -> bytes:
        fields = {k: v for k, v in asdict(self).items() if k != "sig"}
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def mark(self) -> Mark:
        return Mark(self.seq, self.hash, self.count, f"the checkpoint of {self.at}")

    def signature_ok(self) -> bool | None:
        """Whether the signature is right; None when its key is not configured."""
        key = keys.by_id(self.key_id)
        if key is None:
            return None
        return keys.mac(key, DOMAIN, self._signed()) == self.sig


def sign(seq: int, digest: str, count: int) -> Checkpoint:
    kid, key = keys.current()
    unsigned = Checkpoint(seq, digest, count, timezone.now().isoformat(timespec="seconds"), kid)
    return Checkpoint(**{**asdict(unsigned), "sig": keys.mac(key, DOMAIN, unsigned._signed())})


def path() -> Path:
    return Path(settings.MEDAI_AUDIT_CHECKPOINT_PATH)


def read(where: Path | None = None) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints in the file whose signature holds, and a sentence per line that does not."""
    where = where or path()
    good: list[Checkpoint] = []
    problems: list[str] = []
    try:
        text = where.read_text()
    except FileNotFoundError:
        return good, problems
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
            cp = Checkpoint(
                seq=int(data["seq"]),
                hash=str(data["hash"]),
                count=int(data["count"]),
                at=str(data["at"]),
                key_id=str(data["key_id"]),
                sig=str(data["sig"]),
                v=int(data.get("v", VERSION)),
            )
        except (ValueError, KeyError, TypeError):
            problems.append(f"{where} line {n}: not a checkpoint (unreadable)")
            continue
        ok = cp.signature_ok()
        if ok is None:
            problems.append(f"{where} line {n}: signed with audit key id {cp.key_id!r}, which is not configured")
        elif not ok:
            problems.append(f"{where} line {n}: its signature does not match (the checkpoint was edited or forged)")
        else:
            good.append(cp)
    return good, problems


def _append(cp: Checkpoint, where: Path) -> None:
    where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(where, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the schedule and a manual audit_verify may meet
        os.write(fd, (cp.line() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def export(cp: Checkpoint) -> list[str]:
    """Send the checkpoint to each destination; the ones reached. A destination that fails is
    logged and skipped: the others still get it."""
    reached = []
    try:
        _append(cp, path())
        reached.append(str(path()))
    except OSError as exc:
        logger.error("audit checkpoint not written to %s: %s", path(), exc)
    logger.info("audit checkpoint %s", cp.line())
    reached.append("log")
    url = settings.MEDAI_AUDIT_CHECKPOINT_WEBHOOK
    if url:
        try:
            httpx.post(url, content=cp.line(), headers={"Content-Type": "application/json"}, timeout=WEBHOOK_TIMEOUT)
            reached.append("webhook")
        except httpx.HTTPError as exc:
            logger.error("audit checkpoint not delivered to the webhook: %s", exc)
    return reached


@dataclass
class Outcome:
    report: Report
    problems: list[str]  # checkpoint lines that do not hold
    checkpoint: Checkpoint | None = None
    reached: list[str] | None = None

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.problems


def verify_and_checkpoint(*, full: bool) -> Outcome:
    """Verify the chain against the exported checkpoints, then export a new one of its head if it
    holds. ``full``: from the first event (``audit_verify``); else from the newest checkpoint
    (the schedule: its cost follows the events since, not the table's size)."""
    checkpoints, problems = read()
    if full or not checkpoints:
        report = chain.verify(marks=[c.mark() for c in checkpoints])
        total = report.checked
    else:
        newest = max(checkpoints, key=lambda c: c.seq)
        report = chain.verify(since=newest.mark())
        total = newest.count + report.checked
    outcome = Outcome(report, problems)
    if outcome.ok and report.last_seq is not None:
        outcome.checkpoint = sign(report.last_seq, report.last_hash, total)
        outcome.reached = export(outcome.checkpoint)
    audit_metrics.record_verification(
        ok=outcome.ok, checkpoint_at=outcome.checkpoint.at if outcome.checkpoint else None
    )
    if not outcome.ok:
        logger.error(
            "audit chain BROKEN (%s): no checkpoint written",
            "; ".join([f.describe() for f in report.collapsed()[:5]] + problems[:5]),
        )
    return outcome
