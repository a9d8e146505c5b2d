"""The audit chain: how an event is sealed, and how the whole chain is verified.

Sealing: ``hash = HMAC-SHA256(key, "medai-audit-event-v2" || prev_hash || canonical fields)``, the
key being the first of ``MEDAI_AUDIT_KEYS`` (apps/audit/keys.py), never in the database. ``seq`` is
not hashed: the order of the chain is its links (each event names the hash of the one before), so
moving a row shows as a broken link, not as an edit.

The legacy segment: events written before the chain was keyed (empty ``key_id``) were chained with
plain ``sha256(prev_hash || fields)``. They are verified with that rule and must form an unbroken
prefix of the chain: the first keyed event is chained to the last legacy hash, so it seals them (an
edited legacy event would need every later legacy hash recomputed, and then the first keyed
event's link breaks, which cannot be repaired without the key). An unkeyed event after a keyed one
is a forgery (a downgrade) and is reported as such.

Verification walks every event in ``seq`` order once (a batched iterator: memory stays flat) and
classifies each break, then compares what it saw with the chain head row and with the signed
checkpoints exported outside the database (apps/audit/checkpoints.py):

=================  ===========================================================================
edited             the content does not match its keyed hash, the link is intact
inserted           an event that is not part of the chain, between two events that link to each other
forged             neither its hash nor its link fits (and nothing after it repairs the link)
deleted            a genuine event is chained to a hash no event carries: events before it are gone
reordered          a genuine event is chained to an event stored elsewhere in the order
unknown_key        chained under a key id that MEDAI_AUDIT_KEYS does not hold
downgraded         an unkeyed event after keyed ones
truncated          the head row or a checkpoint names an event past the end of the table
rewritten          a checkpoint signed another hash (or count) for an event than it now has
wiped              the table is empty, but the head row or a checkpoint says there were events
head               the head row's MAC does not match it (someone rewound or edited it)
=================  ===========================================================================
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from apps.audit import keys
from apps.audit.models import AuditChainHead, AuditEvent

GENESIS = "0" * 64
EVENT_DOMAIN = b"medai-audit-event-v2"
HEAD_DOMAIN = b"medai-audit-head-v1"
MAX_FINDINGS = 1000  # past it, verification stops: the chain is broken beyond a useful list


# --- sealing -------------------------------------------------------------------------------------


def legacy_digest(prev_hash: str, event: AuditEvent) -> str:
    """The unkeyed hash of events written before the chain was keyed (kept byte for byte)."""
    fields: dict[str, Any] = {
        "created_at": event.created_at.isoformat(),
        "action": event.action,
        "outcome": event.outcome,
        "actor_id": event.actor_id,
        "actor": event.actor,
        "location": event.location,
        "correlation_id": event.correlation_id,
        "ip": event.ip,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "details": event.details,
    }
    # Fields added later were hashed only when set, so events written before them still verified.
    if event.api_key_id is not None:
        fields["api_key_id"] = event.api_key_id
    if event.user_agent:
        fields["user_agent"] = event.user_agent
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def _body(prev_hash: str, event: AuditEvent) -> bytes:
    fields = {
        "prev_hash": prev_hash,
        "key_id": event.key_id,
        "created_at": event.created_at.astimezone(UTC).isoformat(),
        "action": event.action,
        "outcome": event.outcome,
        "actor_id": event.actor_id,
        "actor": event.actor,
        "api_key_id": event.api_key_id,
        "location": event.location,
        "correlation_id": event.correlation_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "purpose_of_use": event.purpose_of_use,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "details": event.details,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()


def keyed_digest(key: bytes, prev_hash: str, event: AuditEvent) -> str:
    return keys.mac(key, EVENT_DOMAIN, _body(prev_hash, event))


def seal(event: AuditEvent, prev_hash: str, kid: str, key: bytes) -> str:
    """Chain ``event`` after ``prev_hash`` under the key ``kid``; returns its hash."""
    event.key_id = kid
    event.prev_hash = prev_hash
    event.hash = keyed_digest(key, prev_hash, event)
    return event.hash


def head_mac(last_seq: int | None, last_hash: str, count: int | None) -> str:
    kid, key = keys.current()
    return kid + ":" + keys.mac(key, HEAD_DOMAIN, f"{last_seq}:{last_hash}:{count}".encode())


def head_mac_ok(head: AuditChainHead) -> bool | None:
    """Whether the head row's MAC matches it; None when its key is not configured."""
    kid, _, _ = head.mac.partition(":")
    key = keys.by_id(kid)
    if key is None:
        return None
    expected = kid + ":" + keys.mac(key, HEAD_DOMAIN, f"{head.last_seq}:{head.last_hash}:{head.count}".encode())
    return expected == head.mac


# --- verification --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    """A point of the chain that something outside the table vouches for: a signed checkpoint."""

    seq: int
    hash: str
    count: int
    label: str  # "the checkpoint of 2026-01-01T00:00:00+00:00"


@dataclass
class Finding:
    seq: int | None
    kind: str
    message: str
    position: int | None = None  # its place in the walk, so that neighbours can be collapsed
    last_seq: int | None = None  # the end of a collapsed run of one kind
    last_position: int | None = None

    def describe(self) -> str:
        if self.seq is None:
            where = "chain"
        elif self.last_seq is not None and self.last_seq != self.seq:
            n = (self.last_position or 0) - (self.position or 0) + 1
            where = f"seq {self.seq}-{self.last_seq} ({n} events)"
        else:
            where = f"seq {self.seq}"
        return f"{where}: {self.kind}: {self.message}"


RUNS = ("edited", "unknown_key", "downgraded", "inserted", "forged")


@dataclass
class Report:
    checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str = GENESIS
    legacy: tuple[int, int] | None = None  # (first, last) seq of the unkeyed segment
    legacy_sealed: bool = False
    marks_checked: int = 0
    since: Mark | None = None  # verified from this checkpoint on, not from the start

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [f.seq for f in self.findings if f.seq is not None]
        return min(seqs) if seqs else None

    @property
    def reason(self) -> str:
        return self.findings[0].describe() if self.findings else ""

    def collapsed(self) -> list[Finding]:
        """Neighbouring events with the same finding as one run: a tail rewritten without the key
        is one line, not ten thousand."""
        out: list[Finding] = []
        for f in self.findings:
            last = out[-1] if out else None
            if (
                last is not None
                and f.kind in RUNS
                and f.kind == last.kind
                and f.position is not None
                and last.position is not None
                and f.position == (last.last_position if last.last_position is not None else last.position) + 1
            ):
                last.last_seq, last.last_position = f.seq, f.position
                continue
            out.append(Finding(f.seq, f.kind, f.message, f.position))
        return out


_FIELDS = [f.attname for f in AuditEvent._meta.concrete_fields]


def _seq_of_hash(digest: str) -> int | None:
    return AuditEvent.objects.filter(hash=digest).values_list("seq", flat=True).first()


class _Walk:
    """One pass over the events, in seq order."""

    def __init__(self, report: Report, expected_prev: str, position: int, marks: dict[int, Mark]) -> None:
        self.report = report
        self.expected_prev = expected_prev
        self.position = position  # events of the chain up to and including the previous one
        self.marks = marks
        self.prev_seq: int | None = None
        self.last_genuine: tuple[int | None, str] = (None, expected_prev)
        self.suspects: list[Finding] = []
        self.seen_keyed = False

    def add(self, seq: int | None, kind: str, message: str) -> Finding:
        finding = Finding(seq, kind, message, self.position)
        self.report.findings.append(finding)
        return finding

    def _genuine(self, event: AuditEvent) -> tuple[bool, str]:
        """(the hash is right for the content and the stored link, why not)."""
        if not event.key_id:
            if self.seen_keyed:
                return False, "downgraded"
            return legacy_digest(event.prev_hash, event) == event.hash, "edited"
        self.seen_keyed = True
        key = keys.by_id(event.key_id)
        if key is None:
            return False, "unknown_key"
        return keyed_digest(key, event.prev_hash, event) == event.hash, "edited"

    def step(self, event: AuditEvent) -> None:
        r = self.report
        seq = event.seq
        if r.first_seq is None:
            r.first_seq = seq
        if not event.key_id and not self.seen_keyed:
            r.legacy = (r.legacy[0] if r.legacy else seq, seq)
        elif event.key_id and r.legacy and not self.seen_keyed:
            r.legacy_sealed = event.prev_hash == self.expected_prev
        genuine, why = self._genuine(event)
        linked = event.prev_hash == self.expected_prev
        after = f"seq {self.prev_seq}" if self.prev_seq is not None else "the start of the chain"
        if not genuine:
            if why == "unknown_key":
                self.add(
                    seq,
                    why,
                    f"chained under audit key id {event.key_id!r}, which MEDAI_AUDIT_KEYS does not hold "
                    "(forged, or the key that wrote it was dropped)",
                )
            elif why == "downgraded":
                self.add(seq, why, "an unkeyed (legacy-style) event after keyed ones: forged")
            elif linked:
                self.suspects.append(
                    self.add(
                        seq,
                        "edited",
                        "its content does not match its keyed hash (edited, or rewritten without the audit key)",
                    )
                )
            else:
                self.suspects.append(
                    self.add(seq, "forged", f"neither its hash nor its link fits the chain after {after}")
                )
        elif not linked:
            good_seq, good_hash = self.last_genuine
            if self.suspects and event.prev_hash == good_hash:
                where = f"seq {good_seq}" if good_seq is not None else "the start"
                for s in self.suspects:
                    s.kind = "inserted"
                    s.message = f"not part of the chain: inserted between {where} and seq {seq}"
            else:
                pred = _seq_of_hash(event.prev_hash) if event.prev_hash != GENESIS else None
                if pred is None:
                    self.add(
                        seq,
                        "deleted",
                        f"the event it is chained to (hash {event.prev_hash[:12]}...) is gone: events were "
                        f"deleted between {after} and seq {seq} (or the events before it rewritten)",
                    )
                else:
                    self.add(seq, "reordered", f"it is chained to seq {pred}, but stored after {after}")
        if genuine:
            self.suspects = []
            self.last_genuine = (seq, event.hash)
        self.position += 1
        mark = self.marks.pop(seq, None)
        if mark is not None:
            r.marks_checked += 1
            if mark.hash != event.hash:
                self.add(
                    seq,
                    "rewritten",
                    f"{mark.label} signed hash {mark.hash[:12]}... for it; it now has {event.hash[:12]}...",
                )
            elif mark.count != self.position:
                self.add(
                    seq,
                    "rewritten",
                    f"{mark.label} counted {mark.count} events up to it; the table now holds "
                    f"{self.position} (events deleted or inserted before it)",
                )
        self.expected_prev = event.hash
        self.prev_seq = seq
        r.checked += 1
        r.last_seq, r.last_hash = seq, event.hash


def verify(*, marks: Iterable[Mark] = (), since: Mark | None = None, batch_size: int = 2000) -> Report:
    """Walk the chain (from ``since``, a trusted checkpoint, or from the start) and report every
    break, each with its seq (see the module docstring for the kinds).

    The head row is read first: writers may append while this runs (those events are verified
    too), but the event the head named then must be there, with the head's hash and count."""
    report = Report(since=since)
    head = AuditChainHead.objects.filter(id=1).first()
    by_seq: dict[int, Mark] = {}
    for m in marks:  # the newest checkpoint of a seq wins (they should all agree)
        by_seq[m.seq] = m
    if head is not None and head.last_seq is not None:
        head_mark = Mark(head.last_seq, head.last_hash, head.count or 0, "the chain head row")
        if head.last_seq not in by_seq:
            by_seq[head.last_seq] = head_mark
    qs = AuditEvent.objects.order_by("seq").only(*_FIELDS)
    walk = _Walk(report, GENESIS, 0, by_seq)
    if since is not None:
        anchor = AuditEvent.objects.filter(seq=since.seq).values_list("hash", flat=True).first()
        if anchor is None:
            report.findings.append(
                Finding(since.seq, "truncated", f"{since.label} names seq {since.seq}, which is gone")
            )
            return report
        if anchor != since.hash:
            report.findings.append(
                Finding(
                    since.seq,
                    "rewritten",
                    f"{since.label} signed hash {since.hash[:12]}...; it now has {anchor[:12]}...",
                )
            )
            return report
        for seq in [seq for seq in by_seq if seq <= since.seq]:
            behind = by_seq.pop(seq)
            if seq < since.seq or behind.hash != since.hash:
                report.findings.append(
                    Finding(
                        seq,
                        "truncated",
                        f"{behind.label} names seq {seq}, behind {since.label} (seq {since.seq}): rewound",
                    )
                )
        qs = qs.filter(seq__gt=since.seq)
        walk = _Walk(report, since.hash, since.count, by_seq)
        walk.prev_seq, walk.seen_keyed = since.seq, True
        walk.last_genuine = (since.seq, since.hash)
        report.last_seq, report.last_hash = since.seq, since.hash
    for event in qs.iterator(chunk_size=batch_size):
        walk.step(event)
        if len(report.findings) >= MAX_FINDINGS:
            report.findings.append(Finding(None, "stopped", f"more than {MAX_FINDINGS} problems; verification stopped"))
            return report
    _check_head(report, head)
    _check_missing_marks(report, walk.marks, since)
    return report


def _check_head(report: Report, head: AuditChainHead | None) -> None:
    if head is None:
        if report.checked and report.since is None:
            report.findings.append(Finding(None, "head", "the chain head row is missing"))
        return
    if head.mac:
        if head_mac_ok(head) is False:
            report.findings.append(
                Finding(head.last_seq, "head", "the chain head row does not match its MAC (edited or rewound)")
            )
    elif head.last_seq is not None:
        report.findings.append(Finding(head.last_seq, "head", "the chain head row has lost its MAC"))
    elif report.checked and head.last_hash != GENESIS and _seq_of_hash(head.last_hash) is None:
        # a legacy head (no seq, no count): it must name an event that is still there
        report.findings.append(
            Finding(None, "truncated", "no event carries the chain head's hash: events were removed from the end")
        )
    if not report.checked and report.since is None and head.last_hash != GENESIS:
        count = head.count if head.count is not None else "some"
        report.findings.append(
            Finding(
                head.last_seq,
                "wiped",
                f"the table holds no event, but the chain head names {count} events"
                + (f" up to seq {head.last_seq}" if head.last_seq is not None else ""),
            )
        )


def _check_missing_marks(report: Report, missing: dict[int, Mark], since: Mark | None) -> None:
    """Checkpoints whose event the walk never met."""
    if not missing:
        return
    if not report.checked and since is None:
        newest = max(missing.values(), key=lambda m: m.seq)
        if not any(f.kind == "wiped" for f in report.findings):
            report.findings.append(
                Finding(
                    newest.seq,
                    "wiped",
                    f"the table holds no event, but {newest.label} names {newest.count} events up to seq {newest.seq}",
                )
            )
        return
    end = report.last_seq
    past_end = sorted((m for m in missing.values() if end is None or m.seq > end), key=lambda m: m.seq)
    inside = sorted((m for m in missing.values() if end is not None and m.seq <= end), key=lambda m: m.seq)
    if past_end:
        newest = past_end[-1]
        report.findings.append(
            Finding(
                newest.seq,
                "truncated",
                f"{newest.label} names seq {newest.seq} ({newest.count} events), but the chain now ends at "
                f"seq {end} ({report.checked + (since.count if since else 0)} events): the tail was cut off",
            )
        )
    for m in inside[:10]:
        report.findings.append(Finding(m.seq, "deleted", f"{m.label} names seq {m.seq}, which is gone"))
