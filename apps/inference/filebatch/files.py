"""The Files API's verbs: upload (purpose ``batch``: a JSONL file of requests, checked line by line),
list, read, download, delete; the files a batch writes (``store``) and the retention sweep.

Every verb takes the caller's Principal and sees only the caller's own files at their current
location (``StoredFile.objects.visible_to``): anyone else's file, a deleted or purged one, and an
id that exists nowhere all answer the same 404. Content is PHI: stored encrypted in parts
(apps.inference.filebatch_models), its download audited before it is answered (``file.read``),
purged ``MEDAI_FILE_TTL`` after its upload (or sooner, ``expires_after``) unless a legal hold
covers its owner or location, or a batch still reads it.

A download is answered from memory, not streamed: Django's ASGI handler reads a synchronous
iterator to the end before sending anything, and a file is bounded (``MEDAI_FILE_MAX_BYTES`` for
an upload; an output file by the lines of its batch).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from apps.accounts.services import Principal
from apps.audit import actions
from apps.audit.services import record_event
from apps.inference.errors import ApiError
from apps.inference.filebatch import jsonl
from apps.inference.filebatch_models import FILE_PREFIX, PART_BYTES, FileBatch, FilePart, StoredFile
from apps.inference.models import LegalHold

EXPIRES_MIN, EXPIRES_MAX = 3600, 30 * 86_400  # OpenAI's bounds of expires_after.seconds
FILENAME_MAX = 255
LIST_MAX = 10_000


def parse_id(file_id: Any) -> uuid.UUID | None:
    """The uuid of a ``file-<hex>`` id, None for anything else (which then exists nowhere: 404)."""
    if not isinstance(file_id, str) or not file_id.startswith(FILE_PREFIX):
        return None
    try:
        return uuid.UUID(hex=file_id.removeprefix(FILE_PREFIX))
    except ValueError:
        return None


def not_found(file_id: Any) -> ApiError:
    shown = file_id if isinstance(file_id, str) and len(file_id) <= 80 and file_id.isprintable() else "that id"
    return ApiError(404, "file_not_found", f"No such file: '{shown}'.", "file_id")


def get_file(principal: Principal, file_id: Any) -> StoredFile:
    """The caller's file, or 404 ``file_not_found``."""
    pk = parse_id(file_id)
    found = StoredFile.objects.visible_to(principal).filter(id=pk).first() if pk else None
    if found is None:
        raise not_found(file_id)
    return found


def expiry(now: datetime, seconds: int | None) -> datetime:
    """When a file made now is purged: MEDAI_FILE_TTL after, or ``seconds`` if that is sooner."""
    ttl = settings.MEDAI_FILE_TTL
    return now + timedelta(seconds=min(seconds, ttl) if seconds else ttl)


def expires_after(anchor: Any, seconds: Any, field: str) -> int | None:
    """OpenAI's expiration policy ``{anchor: "created_at", seconds}`` → seconds (None: not given);
    a 400 naming ``field.anchor`` or ``field.seconds``."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise ApiError(400, "invalid_value", f"{field}.anchor: must be 'created_at'.", f"{field}.anchor")
    try:
        value = int(seconds) if not isinstance(seconds, bool) else None
    except (TypeError, ValueError):
        value = None
    if (
        value is None
        or str(seconds).strip() not in (str(value), f"{value}.0")
        or not EXPIRES_MIN <= value <= EXPIRES_MAX
    ):
        raise ApiError(
            400,
            "invalid_value",
            f"{field}.seconds: must be a whole number of seconds between {EXPIRES_MIN} and {EXPIRES_MAX}.",
            f"{field}.seconds",
        )
    return value


def clean_filename(name: Any) -> str:
    text = str(name or "upload.jsonl").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(c for c in text if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF).strip()
    return (text or "upload.jsonl")[:FILENAME_MAX]


def upload(
    principal: Principal, *, data: bytes, filename: str, purpose: Any, expires_seconds: int | None = None
) -> StoredFile:
    """Store an upload of the caller's: ``purpose`` ``batch`` only (400 naming ``purpose``
    otherwise), at most MEDAI_FILE_MAX_BYTES (413) and MEDAI_FILE_MAX_LINES requests, every line
    checked (``jsonl.check_file``: a 400 naming the line and the field). Audited (``file.upload``)."""
    if purpose != StoredFile.Purpose.BATCH:
        shown = str(purpose)[:40] if purpose is not None else "none"
        raise ApiError(
            400,
            "invalid_value",
            f"purpose: only 'batch' files are taken (a JSONL file of requests for /v1/batches), not {shown!r}.",
            "purpose",
        )
    limit = settings.MEDAI_FILE_MAX_BYTES
    if len(data) > limit:
        raise ApiError(413, "file_too_large", f"file: {len(data)} bytes; the limit is {limit} bytes.", "file")
    text = jsonl.decode(data)
    lines = jsonl.check_file(text, settings.MEDAI_FILE_MAX_LINES)
    with transaction.atomic():
        stored = store(
            user_id=principal.user_id,
            location_id=principal.location_pk,
            purpose=StoredFile.Purpose.BATCH,
            filename=clean_filename(filename),
            text=text,
            size=len(data),
            lines=lines,
            expires_seconds=expires_seconds,
        )
        record_event(
            actions.FILE_UPLOAD,
            actor=principal,
            obj=stored,
            details={"purpose": stored.purpose, "bytes": stored.bytes, "lines": lines},
        )
    return stored


def parts_of(text: str) -> Iterator[tuple[int, int, str]]:
    """``(first_request, first_number, text)`` of each part: whole lines, up to PART_BYTES each."""
    chunk: list[str] = []
    size = 0
    first_request = first_number = 0
    request = 0
    for number, raw in enumerate(jsonl.split_lines(text), start=1):
        length = len(raw.encode("utf-8", "surrogatepass"))
        if chunk and size + length > PART_BYTES:
            yield first_request, first_number, "".join(chunk)
            chunk, size = [], 0
        if not chunk:
            first_request, first_number = request, number
        chunk.append(raw)
        size += length
        if raw.strip():
            request += 1
    if chunk:
        yield first_request, first_number, "".join(chunk)


def store(
    *,
    user_id: int | None,
    location_id: int,
    purpose: str,
    filename: str,
    text: str,
    size: int,
    lines: int,
    expires_seconds: int | None = None,
) -> StoredFile:
    """Write a file and its encrypted parts (inside the caller's transaction)."""
    now = timezone.now()
    stored = StoredFile.objects.create(
        user_id=user_id,
        location_id=location_id,
        purpose=purpose,
        filename=filename,
        bytes=size,
        lines=lines,
        created_at=now,
        expires_at=expiry(now, expires_seconds),
    )
    FilePart.objects.bulk_create(
        [
            FilePart(file=stored, index=i, first_request=first, first_number=number, data=chunk)
            for i, (first, number, chunk) in enumerate(parts_of(text))
        ]
    )
    return stored


def content(principal: Principal, file_id: Any) -> tuple[StoredFile, bytes]:
    """The caller's file and its bytes (the read of PHI: audited first, ``file.read``)."""
    stored = get_file(principal, file_id)
    record_event(actions.FILE_READ, actor=principal, obj=stored, details={"bytes": stored.bytes})
    return stored, read_text(stored).encode("utf-8")


def read_text(stored: StoredFile) -> str:
    return "".join(FilePart.objects.filter(file=stored).order_by("index").values_list("data", flat=True))


def parts_from(stored: StoredFile, request: int) -> Iterator[FilePart]:
    """The file's parts from the one holding request ``request`` (0-based) on, in order."""
    start = (
        FilePart.objects.filter(file=stored, first_request__lte=request)
        .order_by("-index")
        .values_list("index", flat=True)
        .first()
    )
    yield from FilePart.objects.filter(file=stored, index__gte=start or 0).order_by("index").iterator(chunk_size=4)


def lines_from(stored: StoredFile, start: int, n: int | None = None) -> Iterator[jsonl.Line]:
    """Up to ``n`` requests of the file (all, without ``n``) from request ``start`` (0-based) on."""
    taken = 0
    for part in parts_from(stored, start):
        for line in jsonl.requests(part.data, start, part.first_number, part.first_request):
            if n is not None and taken >= n:
                return
            yield line
            taken += 1


def list_files(
    principal: Principal, *, purpose: Any = None, limit: Any = None, order: Any = None, after: Any = None
) -> tuple[list[StoredFile], bool]:
    """A page of the caller's files, newest first (``order=asc``: oldest first), after the cursor
    file ``after``; and whether more follow. 400 naming the parameter for a bad one."""
    qs = StoredFile.objects.visible_to(principal)
    if purpose:
        if purpose not in StoredFile.Purpose.values:
            names = ", ".join(StoredFile.Purpose.values)
            raise ApiError(400, "invalid_value", f"purpose: must be one of {names}.", "purpose")
        qs = qs.filter(purpose=purpose)
    size = page_size(limit, LIST_MAX, LIST_MAX)
    order = order or "desc"
    if order not in ("asc", "desc"):
        raise ApiError(400, "invalid_value", "order: must be asc or desc.", "order")
    if after:
        pk = parse_id(after)
        owned = StoredFile.objects.filter(user_id=principal.user_id, location_id=principal.location_pk)
        cursor = owned.filter(id=pk).values("created_at", "id").first() if pk else None
        if cursor is None:
            raise ApiError(400, "invalid_value", "after: names no file of yours.", "after")
        qs = qs.filter(_beyond(cursor["created_at"], cursor["id"], order))
    ordering = ["created_at", "id"] if order == "asc" else ["-created_at", "-id"]
    rows = list(qs.order_by(*ordering)[: size + 1])
    return rows[:size], len(rows) > size


def _beyond(created_at: Any, pk: Any, order: str) -> Q:
    if order == "asc":
        return Q(created_at__gt=created_at) | Q(created_at=created_at, id__gt=pk)
    return Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=pk)


def page_size(limit: Any, default: int, maximum: int) -> int:
    if limit in (None, ""):
        return default
    try:
        value = int(limit)
    except (TypeError, ValueError):
        value = 0
    if not 1 <= value <= maximum or str(limit).strip() != str(value):
        raise ApiError(400, "invalid_value", f"limit: must be a whole number between 1 and {maximum}.", "limit")
    return value


def delete(principal: Principal, file_id: Any) -> StoredFile:
    """Delete the caller's file (its content at once; its row stays for the batches that name
    it). 409 ``file_in_use`` while a batch of theirs still reads it. Audited (``file.delete``)."""
    with transaction.atomic():
        stored = get_file(principal, file_id)
        if not lock_live(stored):  # deleted meanwhile
            raise not_found(file_id)
        if FileBatch.objects.open().filter(input_file=stored).exists():
            raise ApiError(
                409,
                "file_in_use",
                f"File {stored.public_id} is the input of a batch still running; cancel the batch first.",
                "file_id",
            )
        _remove([stored.id], timezone.now())
        stored.deleted_at = timezone.now()
        record_event(actions.FILE_DELETE, actor=principal, obj=stored, details={"purpose": stored.purpose})
    return stored


def lock_live(stored: StoredFile) -> bool:
    """Lock the file's row until the transaction ends (where the database locks rows): whether it
    is still there, not deleted. A delete and a batch created of the file take it in turn."""
    qs = StoredFile.objects.filter(pk=stored.pk, deleted_at__isnull=True)
    if connection.features.has_select_for_update:
        qs = qs.select_for_update()
    return bool(list(qs.values_list("pk", flat=True)))


def _remove(ids: list[Any], now: Any) -> int:
    FilePart.objects.filter(file_id__in=ids).delete()
    return StoredFile.objects.filter(id__in=ids, deleted_at__isnull=True).update(deleted_at=now)


def purge_due(now: Any = None) -> int:
    """Files past their ``expires_at`` lose their content (as ``delete``), except those a legal
    hold covers (on their owner or location) and the input of a batch still running; one
    ``file.purge`` event counts them. Run by the batches' minute schedule."""
    now = now or timezone.now()
    holds = LegalHold.objects.active().filter(Q(user_id=OuterRef("user_id")) | Q(location_id=OuterRef("location_id")))
    running = FileBatch.objects.open().filter(input_file=OuterRef("id"))
    with transaction.atomic():
        due = list(
            StoredFile.objects.live()
            .filter(expires_at__lte=now)
            .exclude(Exists(holds))
            .exclude(Exists(running))
            .values_list("id", flat=True)[:1000]
        )
        if not due:
            return 0
        purged = _remove(due, now)
        record_event(actions.FILE_PURGE, object_type=StoredFile._meta.label_lower, details={"count": purged})
    return purged


def file_object(stored: StoredFile) -> dict[str, Any]:
    """OpenAI's ``OpenAIFile``."""
    return {
        "id": stored.public_id,
        "object": "file",
        "bytes": stored.bytes,
        "created_at": int(stored.created_at.timestamp()),
        "expires_at": int(stored.expires_at.timestamp()) if stored.expires_at else None,
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
    }
