"""bootstrap_demo: the demo tenant of the embedded default, created once however often it runs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from django.core.management import call_command

from apps.accounts.models import Location, Organization, User
from apps.inference.demo import bootstrap_demo
from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint

SEEDED_AGENTS = {"Chat", "MedicalQA", "Clinical", "Documentation", "Billing", "Claims"}


@pytest.fixture
def var_dir(tmp_path: Path, settings) -> Path:
    settings.VAR_DIR = tmp_path
    return tmp_path


def test_running_twice_creates_one_of_each(db, var_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDAI_DEMO_PASSWORD", "demo-password-123")
    call_command("bootstrap_demo")
    call_command("bootstrap_demo")

    assert Organization.objects.filter(name="Demo").count() == 1
    location = Location.objects.get(code="demo")
    admin, clinician = User.objects.get(username="admin"), User.objects.get(username="clinician")
    assert admin.is_superuser and admin.is_staff and admin.role == User.Role.ADMIN
    assert not clinician.is_superuser and clinician.role == User.Role.CLINICIAN
    for user in (admin, clinician):
        assert list(user.locations.all()) == [location]
        assert user.check_password("demo-password-123")
    assert ModelEndpoint.objects.filter(name="smollm2-135m").count() == 1


def test_bundled_model_is_registered_and_appended_to_every_route_once(
    db,
    var_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEDAI_DEMO_PASSWORD", "demo-password-123")
    other = ModelEndpoint.objects.create(name="gpu-big", base_url="http://10.0.0.5:8000/v1", rank=1)
    chat = AgentRoute.objects.get(agent_type="Chat")
    AgentRouteEntry.objects.create(route=chat, endpoint=other, position=0)

    bootstrap_demo(llama_port=18155)
    bootstrap_demo(llama_port=18155)

    endpoint = ModelEndpoint.objects.get(name="smollm2-135m")
    assert endpoint.kind == ModelEndpoint.Kind.LLAMACPP
    assert endpoint.base_url == "http://127.0.0.1:18155/v1"
    assert endpoint.served_model_id == "smollm2-135m-instruct"
    assert (endpoint.context_length, endpoint.rank) == (2048, 10)
    assert SEEDED_AGENTS <= set(AgentRoute.objects.values_list("agent_type", flat=True))
    for route in AgentRoute.objects.all():
        assert AgentRouteEntry.objects.filter(route=route, endpoint=endpoint).count() == 1
    # Appended after what an admin had already routed, not in front of it.
    assert [e.endpoint.name for e in chat.entries.order_by("position")] == ["gpu-big", "smollm2-135m"]


def test_a_new_llama_port_moves_the_endpoint(db, var_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDAI_DEMO_PASSWORD", "demo-password-123")
    bootstrap_demo(llama_port=18155)
    bootstrap_demo(llama_port=18156)
    assert ModelEndpoint.objects.get(name="smollm2-135m").base_url == "http://127.0.0.1:18156/v1"


def test_generated_password_is_stored_privately_and_reused(
    db,
    var_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    monkeypatch.delenv("MEDAI_DEMO_PASSWORD", raising=False)
    call_command("bootstrap_demo")
    stored = (var_dir / "demo-password").read_text().strip()
    assert len(stored) >= 12
    assert stat.S_IMODE((var_dir / "demo-password").stat().st_mode) == 0o600
    out = capsys.readouterr().out
    assert stored not in out and "generated demo password: not shown here" in out  # captured: a log

    first = bootstrap_demo()
    assert (first.password, first.password_source) == (stored, "file")
    assert User.objects.get(username="clinician").check_password(stored)


def test_env_password_wins_and_resets_the_users(db, var_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDAI_DEMO_PASSWORD", raising=False)
    bootstrap_demo()
    monkeypatch.setenv("MEDAI_DEMO_PASSWORD", "a-new-password-456")
    result = bootstrap_demo()
    assert result.password_source == "env"
    assert User.objects.get(username="admin").check_password("a-new-password-456")


def test_the_bundled_llama_server_is_supervised_and_follows_no_llama(
    db,
    var_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apps.gpu.models import ModelServer

    monkeypatch.setenv("MEDAI_DEMO_PASSWORD", "demo-password-123")
    call_command("bootstrap_demo", "--llama-port", "18157", "--embed-port", "18167")
    call_command("bootstrap_demo", "--llama-port", "18158", "--embed-port", "18168")
    server = ModelServer.objects.get(endpoint__name="smollm2-135m")
    assert ModelEndpoint.objects.count() == 2 and ModelServer.objects.count() == 2  # chat, embeddings
    assert (server.port, server.autostart) == (18158, True)
    assert server.health_url.startswith("http://127.0.0.1:18158/")

    call_command("bootstrap_demo", "--llama-port", "18158", "--embed-port", "18168", "--no-llama")
    assert not ModelServer.objects.filter(autostart=True).exists()


def test_the_bundled_embeddings_server_is_supervised_on_its_own_port(
    db,
    var_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second llama-server on the same GGUF, started with --embeddings: a model that declares
    embeddings and rerank by cosine, on no agent route (chat never fails over to it)."""
    from apps.gpu.models import ModelServer

    monkeypatch.setenv("MEDAI_DEMO_PASSWORD", "demo-password-123")
    call_command("bootstrap_demo", "--llama-port", "18158", "--embed-port", "18159")
    call_command("bootstrap_demo", "--llama-port", "18158", "--embed-port", "18160")
    embedder = ModelEndpoint.objects.get(name="smollm2-135m-embed")
    assert (embedder.supports_embeddings, embedder.rerank) == (True, "embeddings")
    assert embedder.base_url == "http://127.0.0.1:18160/v1"
    assert embedder.served_model_id == "smollm2-135m-instruct" and embedder.context_length == 512
    assert not AgentRouteEntry.objects.filter(endpoint=embedder).exists()
    chat = ModelEndpoint.objects.get(name="smollm2-135m")
    assert (chat.supports_embeddings, chat.rerank) == (False, "")
    server = ModelServer.objects.get(endpoint=embedder)
    assert (server.port, server.autostart) == (18160, True)
    args = server.args
    assert "--embeddings" in args and args[args.index("--pooling") + 1] == "mean"
    assert args[args.index("--parallel") + 1] == "2" and args[args.index("--ctx-size") + 1] == "1024"
    assert args[args.index("--ubatch-size") + 1] == "512"  # a whole input in one batch

    call_command("bootstrap_demo", "--llama-port", "18158", "--embed-port", "18160", "--no-embeddings")
    assert ModelServer.objects.get(endpoint=embedder).autostart is False
    assert ModelServer.objects.get(endpoint=chat).autostart is True


def test_a_generated_password_is_shown_on_a_terminal(db, var_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from io import StringIO

    class Terminal(StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("MEDAI_DEMO_PASSWORD", raising=False)
    out = Terminal()
    call_command("bootstrap_demo", stdout=out)
    assert f"generated demo password: {(var_dir / 'demo-password').read_text().strip()}" in out.getvalue()
