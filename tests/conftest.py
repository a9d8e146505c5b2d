"""Shared fixtures. Personas: alice and bob are clinicians at ``demo``; charlie works at
``north`` (another location) and may see nothing of theirs; audrey is an auditor at ``demo``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from rest_framework.test import APIClient

from apps.accounts import governance
from apps.accounts.models import Location, Organization, User
from apps.accounts.services import create_api_key, issue_tokens
from apps.gpu import shared as gpu_shared
from apps.inference import router
from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint

PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="session", autouse=True)
def _close_other_threads_connections(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Background threads (the record writer, a worker's database thread, the live server's) keep
    connections of their own; on PostgreSQL they would stop pytest-django from dropping the test
    database at the end. Torn down before django_db_setup, so the drop finds no other session."""
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(scope="session", autouse=True)
def _flush_past_the_audit_trigger() -> Iterator[None]:
    """On PostgreSQL the audit table refuses TRUNCATE (apps/audit/migrations/0004_*), and
    pytest-django empties the database after a transactional test with TRUNCATE: that flush runs
    with ``session_replication_role = replica`` (the test role is a superuser), as pg_restore
    would, under which triggers do not fire."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.sql_flush

    def sql_flush(self: DatabaseOperations, *args: object, **kwargs: object) -> list[str]:
        statements = original(self, *args, **kwargs)  # type: ignore[arg-type]
        return ["SET LOCAL session_replication_role = replica", *statements] if statements else statements

    DatabaseOperations.sql_flush = sql_flush  # type: ignore[method-assign]
    yield
    DatabaseOperations.sql_flush = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _audit_checkpoints_of_this_test(tmp_path_factory: pytest.TempPathFactory, settings: object) -> None:
    """Each test's database starts empty, so each gets a checkpoint file of its own: checkpoints
    of an earlier test's chain would (rightly) read as a wiped table."""
    settings.MEDAI_AUDIT_CHECKPOINT_PATH = str(tmp_path_factory.mktemp("audit") / "checkpoints.jsonl")  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    from apps.accounts import services as account_services
    from apps.inference.queue.submit import forget_depth

    router.invalidate()
    forget_depth()  # the queue depth admission caches for 100 ms
    account_services._user_cache.clear()
    account_services._revoked_cache.clear()
    gpu_shared.flush_shared()  # circuits, health, slots, GPU state: nothing leaks between tests
    governance.flush()  # rate-limit buckets, quota counters and holds, the limits' mirror
    yield
    router.invalidate()


@pytest.fixture(autouse=True)
def _records_written() -> Iterator[None]:
    # Non-streamed chat records are written in the background (apps/inference/recorder.py):
    # write them before pytest-django's teardown empties the database (its fixtures, set up
    # first, are torn down after this one), or one would land in the next test.
    yield
    records_written()


def records_written() -> None:
    """Wait until every chat record and every buffered audit event submitted so far is in the database."""
    from apps.audit.buffer import buffer
    from apps.inference.recorder import writer

    assert writer.flush(10), "chat records were not written within 10 s"
    assert governance.wait_settled(10), "quota reservations were not settled within 10 s"
    assert buffer.flush(10), "audit events were not written within 10 s" + _held_by_this_test()


def _held_by_this_test() -> str:
    from django.db import connection

    if connection.vendor == "sqlite" and connection.in_atomic_block:
        return (
            " (on SQLite this test's transaction holds the write lock until it ends, so no other thread"
            " can write: a test whose requests write from another thread needs django_db(transaction=True))"
        )
    return ""


@pytest.fixture
def org(db) -> Organization:
    return Organization.objects.create(name="Demo Hospital")


@pytest.fixture
def demo(org: Organization) -> Location:
    return Location.objects.create(organization=org, code="demo", name="Demo ward")


@pytest.fixture
def north(org: Organization) -> Location:
    return Location.objects.create(organization=org, code="north", name="North clinic")


def _user(username: str, role: str, org: Organization, *locations: Location) -> User:
    user = User.objects.create_user(username, password=PASSWORD, role=role, organization=org)
    user.locations.add(*locations)
    return user


@pytest.fixture
def alice(org: Organization, demo: Location) -> User:
    return _user("alice", User.Role.CLINICIAN, org, demo)


@pytest.fixture
def bob(org: Organization, demo: Location) -> User:
    return _user("bob", User.Role.CLINICIAN, org, demo)


@pytest.fixture
def charlie(org: Organization, north: Location) -> User:
    return _user("charlie", User.Role.CLINICIAN, org, north)


@pytest.fixture
def audrey(org: Organization, demo: Location) -> User:
    return _user("audrey", User.Role.AUDITOR, org, demo)


@pytest.fixture
def token_for() -> Callable[..., str]:
    """An access JWT for a user at a location (their first one by default)."""

    def make(user: User, location: Location | None = None) -> str:
        return issue_tokens(user, location or user.locations.first()).access_token

    return make


@pytest.fixture
def api_key_for() -> Callable[..., str]:
    def make(user: User, location: Location | None = None, **kwargs: object) -> str:
        _, secret = create_api_key(user, name="test key", location=location or user.locations.first(), **kwargs)
        return secret

    return make


@pytest.fixture
def client_for(token_for: Callable[..., str]) -> Callable[..., APIClient]:
    """A DRF test client that sends ``Authorization: Bearer <JWT>`` for the user."""

    def make(user: User, location: Location | None = None) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, location)}")
        return client

    return make


def register_model(
    name: str,
    base_url: str,
    *,
    rank: int = 10,
    served: str = "",
    agents: tuple[str, ...] = ("Chat",),
    enabled: bool = True,
    position: int = 0,
    **fields: object,
) -> ModelEndpoint:
    """Register a model and append it to the given agent routes (``fields``: more of its columns,
    e.g. ``supports_embeddings``)."""
    endpoint = ModelEndpoint.objects.create(
        name=name, base_url=base_url, served_model_id=served, rank=rank, enabled=enabled, context_length=2048, **fields
    )
    for agent_type in agents:
        route, _ = AgentRoute.objects.get_or_create(agent_type=agent_type)
        AgentRouteEntry.objects.create(route=route, endpoint=endpoint, position=position)
    router.invalidate()
    return endpoint


# --- real servers --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def llama_server() -> Iterator[str]:
    """A real llama.cpp server on the bundled SmolLM2 model (OpenAI base URL). Shared by the session."""
    from tests.support.servers import start_llama_server

    proc, url = start_llama_server()
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def llama_embed_server() -> Iterator[str]:
    """A real llama.cpp server on the bundled SmolLM2 as the embedded default runs it for
    embeddings (``EMBEDDINGS_SERVER_ARGS``: ``--embeddings --pooling mean``, a batch of 512
    tokens: the longest text it embeds). Shared by the session."""
    from apps.gpu.llamacpp import EMBEDDINGS_PARALLEL, EMBEDDINGS_SERVER_ARGS
    from tests.support.servers import start_llama_server

    proc, url = start_llama_server(parallel=EMBEDDINGS_PARALLEL, extra=list(EMBEDDINGS_SERVER_ARGS))
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def llama_rerank_server() -> Iterator[str]:
    """A real llama.cpp server started with ``--reranking`` (its own ``/v1/rerank``)."""
    from tests.support.servers import start_llama_server

    proc, url = start_llama_server(parallel=1, extra=["--reranking"])
    yield url
    proc.stop()


@pytest.fixture
def stub_backend() -> Iterator[str]:
    """medai's own OpenAI-compatible stub (failure injection: see bench/stub_backend.py)."""
    from tests.support.servers import start_stub

    proc, url = start_stub()
    yield url
    proc.stop()


@pytest.fixture
def live_medai(transactional_db) -> Iterator[str]:
    """medai served over real HTTP by uvicorn (ASGI), against the test database."""
    from tests.support.servers import LiveASGIServer

    server = LiveASGIServer().start()
    yield server.url
    server.stop()
