"""The secrets of a medai installation, and the rules they must pass before anything starts.

Four secrets, separate and none derived from another: Django's ``SECRET_KEY`` (sessions, CSRF,
django-q2's signed task packages), ``JWT_SIGNING_KEY`` (HS256 access and refresh tokens),
``MEDAI_ENCRYPTION_KEYS`` (the Fernet keys of PHI and backend API keys at rest: comma-separated,
newest first; older ones still decrypt, so a key is rotated by putting a new one in front) and
``MEDAI_AUDIT_KEYS`` (the HMAC-SHA256 keys of the audit trail's chain and of its exported
checkpoints, apps/audit/keys.py: newest first, older ones still verify; kept out of the database so
that someone who can write the database cannot recompute the chain). Each is read from ``NAME`` or
from the file named by ``NAME_FILE``. None has a default in code.

``MEDAI_ENV`` decides what happens when one is missing:

- ``development`` or ``test`` (case-insensitive; ``make run``, ``make lint`` and the test suite set
  them): a missing secret is generated on first use into the var dir (``secret-key``,
  ``jwt-signing-key``, ``encryption-keys``, ``audit-keys``; mode 0600) and reused on every later start. Each file is
  written to a temporary file created with O_EXCL and mode 0600, then published with link(2), which
  fails if the name exists: processes that start together (the launcher's web, worker and
  monitor, a test's subprocesses) all end up with the first writer's key, never half a file.
  ``DEBUG`` may be on.
- anything else, unset included, applies production rules: every secret must be given, long
  enough, not guessable and not a published one, and ``DEBUG`` must be off; otherwise
  ``ImproperlyConfigured`` lists every problem with the variable it concerns and how to fix it.

Unset is strict on purpose: a server on which someone forgot a variable must refuse to start rather
than run on keys that quietly appeared in a local directory. A developer sets ``MEDAI_ENV`` once
(the error says so). Every other rule (length, entropy, known keys, keys equal to one another)
applies to a given value in every environment: a development or test run relaxes exactly two
rules, a missing secret is generated and ``DEBUG`` is allowed.

The entropy rule is an estimate, meant to catch keys a person typed (``aaaa…``, ``changeme…``,
``0123…``), not to measure randomness: the Shannon entropy of the characters and of the steps
between neighbours, the lower of the two, times the length; and a key that repeats a shorter one.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import math
import os
import secrets as _random
import stat
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from medai.env import envsecret

DEVELOPMENT_ENVS = ("development", "test")
MIN_KEY_LENGTH = 32
MIN_ENTROPY_BITS = 80.0

SECRET_KEY = "SECRET_KEY"
JWT_SIGNING_KEY = "JWT_SIGNING_KEY"
ENCRYPTION_KEYS = "MEDAI_ENCRYPTION_KEYS"
AUDIT_KEYS = "MEDAI_AUDIT_KEYS"
FILES = {
    SECRET_KEY: "secret-key",
    JWT_SIGNING_KEY: "jwt-signing-key",
    ENCRYPTION_KEYS: "encryption-keys",
    AUDIT_KEYS: "audit-keys",
}

# SHA-256 of keys that were published (medai's former development SECRET_KEY, and the Fernet key
# the encryption key used to be derived from it): digests, so the keys themselves appear nowhere.
_PUBLISHED_DIGESTS = frozenset(
    {
        "c934571be5c75300d8fe01457761fc45dc3ac270eaafc254bc351e2b5e994513",
        "28c6eaed27b2cd175004461135858306f9ab1659b3aeb7322040df6235eb9501",
    }
)
_EXAMPLE_FILE = Path(__file__).resolve().parent.parent / ".env.example"

GENERATE_HINT = """\
Set each secret, or NAME_FILE naming a file (mode 0600) that holds it:
  SECRET_KEY and JWT_SIGNING_KEY: two different random values of at least 32 characters, e.g.
    python -c "import secrets; print(secrets.token_urlsafe(50))"
  MEDAI_ENCRYPTION_KEYS: Fernet keys, comma-separated, newest first, e.g.
    python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
  MEDAI_AUDIT_KEYS: random values of at least 32 characters, comma-separated, newest first (the
    audit chain's HMAC keys; keep the old ones to verify old events), e.g. as for SECRET_KEY
On a developer machine set MEDAI_ENV=development instead (make run does): missing keys are then
generated into {var_dir} and reused."""


@dataclass(frozen=True)
class Environment:
    """``MEDAI_ENV`` as given (for messages), normalised, and whether it is a development one."""

    raw: str | None
    name: str
    development: bool

    @classmethod
    def parse(cls, raw: str | None) -> Environment:
        name = (raw or "").strip().lower()
        return cls(raw, name, name in DEVELOPMENT_ENVS)

    def describe(self) -> str:
        if not self.name:
            return "MEDAI_ENV is not set, so production rules apply"
        if self.development:
            return f"MEDAI_ENV={self.raw}"
        return f'MEDAI_ENV={self.raw} is neither "development" nor "test", so production rules apply'


@dataclass(frozen=True)
class Secrets:
    secret_key: str = field(repr=False)
    jwt_signing_key: str = field(repr=False)
    encryption_keys: tuple[str, ...] = field(repr=False)
    audit_keys: tuple[str, ...] = field(repr=False, default=())
    # where each came from: "environment", "file <path>" (NAME_FILE or the var dir), "generated <path>"
    sources: dict[str, str] = field(default_factory=dict, compare=False)


# --- estimates and checks ------------------------------------------------------------------------


def _shannon(symbols: list[int]) -> float:
    n = len(symbols)
    return -sum(c / n * math.log2(c / n) for c in Counter(symbols).values())


def estimated_entropy_bits(value: str | bytes) -> float:
    """A rough upper estimate of the entropy of ``value`` in bits (see the module docstring)."""
    symbols = list(value) if isinstance(value, bytes) else [ord(c) for c in value]
    if len(symbols) < 2:
        return 0.0
    steps = [b - a for a, b in zip(symbols, symbols[1:], strict=False)]
    return max(0.0, min(_shannon(symbols), _shannon(steps)) * len(symbols))


def _repeats_a_shorter_value(value: str | bytes) -> bool:
    """``value`` is a shorter one over and over (the last repetition may be cut short)."""
    return any(value[p:] == value[:-p] for p in range(1, len(value) // 2 + 1))


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def former_derived_fernet_key(key: str) -> str:
    """The Fernet key medai used to derive from SECRET_KEY: refused, so it can never come back."""
    return base64.urlsafe_b64encode(hashlib.sha256(b"medai-at-rest:" + key.encode()).digest()).decode()


def _example_values() -> frozenset[str]:
    """Every value assigned in .env.example (commented-out lines too): none of them is a secret."""
    try:
        lines = _EXAMPLE_FILE.read_text().splitlines()
    except OSError:
        return frozenset()
    values: set[str] = set()
    for line in lines:
        name, sep, value = line.lstrip("# ").partition("=")
        if sep and name.strip().isidentifier():
            values.update(v.strip() for v in [value, *value.split(",")] if len(v.strip()) >= 8)
    return frozenset(values)


def _published(value: str) -> bool:
    return _digest(value) in _PUBLISHED_DIGESTS or value in _example_values()


def text_key_problems(name: str, value: str) -> list[str]:
    """Why ``value`` cannot be SECRET_KEY or JWT_SIGNING_KEY (empty: it can)."""
    if value.startswith("django-insecure-"):
        return [f"{name} is a Django development key (it starts with 'django-insecure-')."]
    if _published(value):
        return [f"{name} is a published key (medai's former development key or a value from .env.example)."]
    if len(value) < MIN_KEY_LENGTH:
        n = len(value)
        return [f"{name} is {n} character{'' if n == 1 else 's'} long; it must be at least {MIN_KEY_LENGTH}."]
    bits = estimated_entropy_bits(value)
    if _repeats_a_shorter_value(value) or bits < MIN_ENTROPY_BITS:
        return [
            f"{name} is guessable (about {bits:.0f} bits of entropy estimated, at least "
            f"{MIN_ENTROPY_BITS:.0f} needed): use a random value."
        ]
    return []


def fernet_key_problems(name: str, keys: tuple[str, ...]) -> list[str]:
    """Why ``keys`` cannot be MEDAI_ENCRYPTION_KEYS (empty: they can)."""
    problems = []
    for i, key in enumerate(keys, 1):
        label = f"{name} key {i} of {len(keys)}" if len(keys) > 1 else name
        try:
            raw = base64.urlsafe_b64decode(key.encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32 or len(key) != 44:
            problems.append(
                f"{label} is not a Fernet key (44 characters of url-safe base64 that decode to 32 random bytes)."
            )
        elif _published(key):
            problems.append(
                f"{label} is a published key (the key medai derived from its former development key, "
                "or a value from .env.example)."
            )
        elif _repeats_a_shorter_value(raw) or estimated_entropy_bits(raw) < MIN_ENTROPY_BITS:
            problems.append(f"{label} is guessable (its 32 bytes are not random): generate one.")
    return problems


def cross_problems(
    secret_key: str, jwt_key: str, fernet_keys: tuple[str, ...], audit_keys: tuple[str, ...] = ()
) -> list[str]:
    """Keys equal to, or derived from, one another."""
    problems = []
    for other_name, other in ((SECRET_KEY, secret_key), (JWT_SIGNING_KEY, jwt_key)):
        if other and other in audit_keys:
            problems.append(f"{AUDIT_KEYS} contains {other_name}: the audit key must be its own random value.")
    if set(audit_keys) & set(fernet_keys):
        problems.append(f"{AUDIT_KEYS} shares a key with {ENCRYPTION_KEYS}: each must be its own random value.")
    if secret_key and secret_key == jwt_key:
        problems.append(f"{JWT_SIGNING_KEY} equals {SECRET_KEY}: each must be its own random value.")
    for other_name, other in ((SECRET_KEY, secret_key), (JWT_SIGNING_KEY, jwt_key)):
        if other and any(k in (other, former_derived_fernet_key(other)) for k in fernet_keys):
            problems.append(
                f"{ENCRYPTION_KEYS} contains {other_name} or a key derived from it: the encryption "
                "key must be independent of every other key."
            )
    return problems


# --- files in the var dir ----------------------------------------------------------------------


def private_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700, or take group and world access off an existing one of ours.

    The var dir holds the keys, the SQLite database, the embedded Redis socket and the demo
    password. A directory another user owns, or a shared sticky one such as /tmp, is not changed:
    it is refused.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        if st.st_uid != os.geteuid() or mode & stat.S_ISVTX:
            raise ImproperlyConfigured(
                f"MEDAI_VAR_DIR={path} is mode {mode:o} and shared (owned by another user, or "
                "sticky like /tmp): medai keeps keys and data there; give it a private "
                "directory (mode 0700)."
            )
        os.chmod(path, mode & 0o700)
    return path


def private_file(path: Path, *, create: bool = False) -> None:
    """Make ``path`` readable by its owner only (0600), creating it empty when ``create``."""
    if create:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # never truncates what is there
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o600)


def private_sqlite_database(name: str) -> None:
    """The SQLite file and its -wal/-shm companions: 0600. The file is created before SQLite opens
    it, because SQLite gives its -wal and -shm files the database file's own mode."""
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    path = Path(name)
    if path.parent.is_dir():
        private_file(path, create=True)
    for suffix in ("-wal", "-shm", "-journal"):
        private_file(path.with_name(path.name + suffix))


def _read_key_file(path: Path, name: str) -> str:
    """A key file's content. An empty one is another process between creating and writing it
    (only without link(2)); it is waited for briefly."""
    for _ in range(50):
        private_file(path)
        value = path.read_text().strip()
        if value:
            return value
        time.sleep(0.02)
    raise ImproperlyConfigured(
        f"{path} ({name}) is empty: delete it to have a new key generated"
        + (" (data encrypted with the old key is lost)." if name == ENCRYPTION_KEYS else ".")
    )


def create_once(path: Path, name: str, make: Callable[[], str]) -> tuple[str, bool]:
    """The key in ``path``, written from ``make()`` first if there is none; (key, whether we wrote it)."""
    try:
        return _read_key_file(path, name), False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_random.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(make() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic; fails if another process published first: theirs wins
            won = True
        except FileExistsError:
            won = False
        except OSError as exc:  # a file system without hard links: create the name itself, exclusively
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
                raise
            won = _create_exclusive(path, tmp.read_text())
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key_file(path, name), won


def _create_exclusive(path: Path, content: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(content)
    return True


# --- the four secrets ----------------------------------------------------------------------------


def _from_environ(name: str, environ: Mapping[str, str]) -> tuple[str, str]:
    """(value, where it came from) from NAME_FILE or NAME; ("", "") when neither is set."""
    value = envsecret(name, environ)
    if not value:
        return "", ""
    return value, (f"file {environ[f'{name}_FILE']}" if environ.get(f"{name}_FILE") else "environment")


def split_keys(value: str) -> tuple[str, ...]:
    return tuple(k for k in value.replace(",", " ").split() if k)


def _new_text_key() -> str:
    return _random.token_urlsafe(50)


def _new_fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def load(*, environ: Mapping[str, str], var_dir: Path, debug: bool) -> Secrets:
    """The four secrets for this process, generated into ``var_dir`` where that is allowed; raises
    ImproperlyConfigured listing every problem otherwise."""
    env = Environment.parse(environ.get("MEDAI_ENV"))
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    for name, make in (
        (SECRET_KEY, _new_text_key),
        (JWT_SIGNING_KEY, _new_text_key),
        (ENCRYPTION_KEYS, _new_fernet_key),
        (AUDIT_KEYS, _new_text_key),
    ):
        value, source = _from_environ(name, environ)
        if not value and env.development:
            path = var_dir / FILES[name]
            value, wrote = create_once(path, name, make)
            source = f"{'generated' if wrote else 'file'} {path}"
        if not value:
            problems.append(f"{name} is not set (nor {name}_FILE).")
        values[name], sources[name] = value, source

    secret_key, jwt_key = values[SECRET_KEY], values[JWT_SIGNING_KEY]
    fernet_keys = split_keys(values[ENCRYPTION_KEYS])
    audit_keys = split_keys(values[AUDIT_KEYS])
    labelled = [(SECRET_KEY, secret_key), (JWT_SIGNING_KEY, jwt_key)]
    labelled += [
        (f"{AUDIT_KEYS} key {i} of {len(audit_keys)}" if len(audit_keys) > 1 else AUDIT_KEYS, key)
        for i, key in enumerate(audit_keys, 1)
    ]
    for name, value in labelled:
        if value:
            source = sources.get(name, sources[AUDIT_KEYS])
            problems += [
                f"{p} (from {source})" if source != "environment" else p for p in text_key_problems(name, value)
            ]
    problems += fernet_key_problems(ENCRYPTION_KEYS, fernet_keys)
    problems += cross_problems(secret_key, jwt_key, fernet_keys, audit_keys)
    if debug and not env.development:
        problems.append(
            "DEBUG is on: its error pages show settings, source and request data to anyone who "
            "triggers one. Set DEBUG=0 (DEBUG is allowed only with MEDAI_ENV=development or test)."
        )
    if problems:
        raise ImproperlyConfigured(
            f"{env.describe()}; medai refuses to start:\n"
            + "".join(f"  - {p}\n" for p in problems)
            + GENERATE_HINT.format(var_dir=var_dir)
        )
    return Secrets(secret_key, jwt_key, fernet_keys, audit_keys, sources)
