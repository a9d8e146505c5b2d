"""The launcher (`make run`): one command brings up the embedded default end to end, restarts what it
owns when it dies (the embedded Redis on the same socket), and Ctrl-C
takes every process it started down again."""

from __future__ import annotations

import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from medai.launcher import READY_LINE, port_is_free
from tests.support.servers import ROOT, free_port

SECRETS = ("SECRET_KEY", "JWT_SIGNING_KEY", "MEDAI_ENCRYPTION_KEYS", "MEDAI_AUDIT_KEYS")
START_TIMEOUT = 300.0  # migrations on a fresh SQLite, model load: bounded, not timed


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc), children of children included."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def launcher(tmp_path: Path, request: pytest.FixtureRequest):
    """The launcher as `make run` starts it; ``@pytest.mark.launcher_env(NAME="value")`` adds to its environment."""
    port, llama_port, embed_port = free_port(), free_port(), free_port()
    marker = request.node.get_closest_marker("launcher_env")
    env = {
        **os.environ,
        "MEDAI_VAR_DIR": str(tmp_path / "var"),
        "MEDAI_PORT": str(port),
        "MEDAI_LLAMA_PORT": str(llama_port),
        "MEDAI_EMBED_PORT": str(embed_port),
        "MEDAI_DEMO_PASSWORD": "launcher-test-pass",
        **(marker.kwargs if marker else {}),
    }
    env.pop("REDIS_URL", None)  # the launcher's own embedded Redis, as `make run` does
    for name in ("MEDAI_ENV", *SECRETS, *(f"{n}_FILE" for n in SECRETS)):
        env.pop(name, None)  # a fresh clone: nothing set; the launcher makes it a development environment
    if env.get("DATABASE_URL", "").startswith("postgres"):
        env.pop("DATABASE_URL")  # not the test database pytest-django owns: SQLite in the tmp var dir
    proc = subprocess.Popen(
        [sys.executable, "-m", "medai.launcher"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    state = {
        "proc": proc,
        "port": port,
        "llama_port": llama_port,
        "embed_port": embed_port,
        "lines": lines,
        "output": output,
        "var": tmp_path / "var",
    }
    yield state
    if proc.poll() is None:
        for pid in _descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
        proc.wait(10)


def _wait_for_ready(state: dict) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = state["lines"].get(timeout=1)
        except queue.Empty:
            if state["proc"].poll() is not None:
                break
            continue
        if READY_LINE in line:
            return
    pytest.fail("launcher never printed ready:\n" + "".join(state["output"])[-5000:])


def test_launcher_serves_a_chat_answer_and_sigint_stops_every_process(launcher) -> None:
    proc: subprocess.Popen = launcher["proc"]
    _wait_for_ready(launcher)
    children = _descendants(proc.pid)
    names = {Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid in children}
    assert any("llama-server" in n for n in names) and any("uvicorn" in n for n in names)
    assert any("qcluster" in n for n in names)
    assert any("manage.py monitor" in n for n in names)  # it started (and supervises) llama-server

    base = f"http://127.0.0.1:{launcher['port']}"
    login = httpx.post(
        f"{base}/v1/auth/login",
        json={"username": "clinician", "password": "launcher-test-pass", "location_id": "demo"},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    chat = httpx.post(
        f"{base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
        json={"model": "Chat", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hello."}]},
    )
    assert chat.status_code == 200, chat.text
    body = chat.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert body["usage"]["completion_tokens"] > 0
    assert httpx.get(f"{base}/admin/login/", timeout=10).status_code == 200
    # The admin's stylesheet is served by the ASGI app itself (whitenoise): the admin looks right.
    assert httpx.get(f"{base}/static/admin/css/base.css", timeout=10).status_code == 200

    # Its keys were generated into its var dir (0600), and every child uses them: the web process
    # encrypts an async request that the worker decrypts and answers, and the web reads the result.
    var = launcher["var"]
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    for name in ("secret-key", "jwt-signing-key", "encryption-keys"):
        assert stat.S_IMODE((var / name).stat().st_mode) == 0o600, name
    headers = {"Authorization": f"Bearer {token}"}
    submitted = httpx.post(
        f"{base}/v1/async/submit",
        headers=headers,
        timeout=30,
        json={"agent_type": "Chat", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hi."}]},
    )
    assert submitted.status_code == 202, submitted.text
    deadline = time.monotonic() + 120
    while (
        result := httpx.get(f"{base}/v1/async/result/{submitted.json()['task_id']}", headers=headers, timeout=30)
    ).status_code == 409 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert result.status_code == 200, result.text
    assert result.json()["choices"][0]["message"]["content"].strip()

    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, "".join(launcher["output"])[-3000:]
    leftovers = {pid for pid in children if _alive(pid)}
    assert not leftovers, f"processes left running after SIGINT: {leftovers}"
    assert port_is_free(launcher["port"]) and port_is_free(launcher["llama_port"])
    assert port_is_free(launcher["embed_port"])
    assert "all stopped" in "".join(launcher["output"])


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _embeddings_server_pid(launcher_pid: int, port: int) -> int | None:
    """The llama-server under the launcher started with ``--embeddings`` on ``port``, if one runs."""
    for pid in _descendants(launcher_pid):
        argv = _cmdline(pid)
        if argv and "llama-server" in argv[0] and "--embeddings" in argv and str(port) in argv and _alive(pid):
            return pid
    return None


def test_launcher_serves_embeddings_from_its_own_supervised_server_and_restarts_it(launcher) -> None:
    """`make run` starts a second llama-server (the bundled GGUF, ``--embeddings``, its own port)
    and registers it as a model that embeds and reranks: the official client gets vectors through
    medai; killed, the monitor starts it again and it answers again; Ctrl-C stops it too."""
    import openai

    proc: subprocess.Popen = launcher["proc"]
    _wait_for_ready(launcher)
    embed_port = launcher["embed_port"]
    first = _embeddings_server_pid(proc.pid, embed_port)
    assert first is not None, "no llama-server --embeddings on MEDAI_EMBED_PORT under the launcher"
    argv = _cmdline(first)
    assert argv[argv.index("--pooling") + 1] == "mean" and "--port" in argv
    chat = [p for p in _descendants(proc.pid) if "llama-server" in (_cmdline(p) or [""])[0] and p != first]
    assert chat and all("--embeddings" not in _cmdline(p) for p in chat)  # chat is its own server

    base = f"http://127.0.0.1:{launcher['port']}"
    login = httpx.post(
        f"{base}/v1/auth/login",
        json={"username": "clinician", "password": "launcher-test-pass", "location_id": "demo"},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=60)
    answer = client.embeddings.create(model="smollm2-135m-embed", input=["fever and cough", "broken wrist"])
    assert [d.index for d in answer.data] == [0, 1]
    assert {len(d.embedding) for d in answer.data} == {576}  # SmolLM2-135M's hidden size
    assert answer.usage.prompt_tokens > 0
    ranked = httpx.post(
        f"{base}/v1/rerank",
        headers={"Authorization": f"Bearer {token}"},
        json={"model": "smollm2-135m-embed", "query": "fever", "documents": ["cough", "wrist", "fever"]},
        timeout=60,
    )
    assert ranked.status_code == 200, ranked.text
    assert sorted(r["index"] for r in ranked.json()["results"]) == [0, 1, 2]
    with pytest.raises(openai.BadRequestError) as chat_model:  # the chat server's model does not embed
        client.embeddings.create(model="smollm2-135m", input="x")
    assert chat_model.value.body["param"] == "model"
    models = {m.id for m in client.models.list().data}
    assert {"smollm2-135m", "smollm2-135m-embed"} <= models

    os.kill(first, signal.SIGKILL)  # the monitor supervises it as it does the chat server
    again = _until(lambda: (found := _embeddings_server_pid(proc.pid, embed_port)) and found != first and found, 120)
    vectors = _until(
        lambda: (
            (
                r := httpx.post(
                    f"{base}/v1/embeddings",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"model": "smollm2-135m-embed", "input": "chest pain", "encoding_format": "float"},
                    timeout=30,
                )
            ).status_code
            == 200
            and r.json()
        ),
        120,
    )
    assert len(vectors["data"][0]["embedding"]) == 576

    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, "".join(launcher["output"])[-3000:]
    assert not _alive(again) and port_is_free(embed_port)


def test_launcher_refuses_a_port_in_use_with_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "MEDAI_VAR_DIR": str(tmp_path), "MEDAI_PORT": str(port), "MEDAI_LLAMA": "0"}
        result = subprocess.run(
            [sys.executable, "-m", "medai.launcher"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert f"port {port} (MEDAI_PORT) is in use" in result.stdout


def test_launcher_outside_development_refuses_missing_keys_before_starting_anything(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MEDAI_VAR_DIR": str(tmp_path / "var"),
        "MEDAI_PORT": str(free_port()),
        "MEDAI_LLAMA": "0",
        "MEDAI_ENV": "production",
    }
    for name in (*SECRETS, *(f"{n}_FILE" for n in SECRETS)):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "medai.launcher"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "SECRET_KEY is not set" in result.stdout and "MEDAI_ENV=development" in result.stdout
    assert "embedded Redis" not in result.stdout and "manage.py" not in result.stdout
    assert not (tmp_path / "var" / "secret-key").exists()


def _redis_server_pid(launcher_pid: int) -> int | None:
    """The embedded redis-server under the launcher, if one runs (it rewrites its command line:
    found by its process name)."""
    for pid in _descendants(launcher_pid):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if name.startswith("redis-server") and _alive(pid):
            return pid
    return None


def _redis_urls(output: list[str]) -> list[str]:
    """Every REDIS_URL the launcher announced (its embedded Redis)."""
    return [line.split("embedded Redis at ", 1)[1].split()[0] for line in output if "embedded Redis at " in line]


def _until(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except (httpx.HTTPError, OSError):
            result = None
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"{check} did not hold within {timeout:.0f}s")


@pytest.mark.launcher_env(MEDAI_LLAMA="0")
def test_a_killed_embedded_redis_comes_back_on_the_same_socket_and_the_platform_works_again(launcher) -> None:
    import json

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    proc: subprocess.Popen = launcher["proc"]
    _wait_for_ready(launcher)
    base = f"http://127.0.0.1:{launcher['port']}"
    ws_base = base.replace("http://", "ws://")
    pid = _redis_server_pid(proc.pid)
    assert pid is not None, "no embedded redis-server under the launcher"
    [redis_url] = _redis_urls(launcher["output"])
    socket_path = redis_url.removeprefix("unix://")
    assert Path(socket_path).is_socket()

    def login() -> str:
        answer = httpx.post(
            f"{base}/v1/auth/login",
            timeout=30,
            json={"username": "clinician", "password": "launcher-test-pass", "location_id": "demo"},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    token = login()
    with connect(f"{ws_base}/ws/status/", subprotocols=["bearer", token], open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013

    again = _until(lambda: (found := _redis_server_pid(proc.pid)) and found != pid and found)
    assert f"starting it again on {socket_path}" in "".join(launcher["output"])
    assert Path(socket_path).is_socket()  # the same socket: every child keeps its REDIS_URL
    assert proc.poll() is None
    _until(lambda: httpx.get(f"{base}/readyz", timeout=10).json()["checks"]["redis"]["ok"])
    token = login()
    with connect(f"{ws_base}/ws/status/", subprotocols=["bearer", token], open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
    # the monitor publishes again into the new Redis: a fresh sample, not a stale one
    status = _until(
        lambda: (
            (
                body := httpx.get(
                    f"{base}/v1/gpu/status", timeout=10, headers={"Authorization": f"Bearer {token}"}
                ).json()
            )
            and body["monitor_running"]
            and body
        )
    )
    assert status["stale"] is False

    # the launcher supervises its other children too: a killed web server is started again
    [web] = [p for p in _descendants(proc.pid) if "uvicorn" in Path(f"/proc/{p}/cmdline").read_bytes().decode()]
    os.kill(web, signal.SIGKILL)
    _until(lambda: "web started again" in "".join(launcher["output"]))
    assert _until(lambda: httpx.get(f"{base}/healthz", timeout=5).status_code == 200)

    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, "".join(launcher["output"])[-3000:]
    assert not _alive(again)


@pytest.mark.launcher_env(MEDAI_LLAMA="0", MEDAI_ACCESS_LOG="1")
def test_with_access_logs_on_the_web_log_carries_no_credential(launcher) -> None:
    """The real `make run` logging (uvicorn's CLI configures it, then Django): a websocket opened with
    ?token=, requests with credentials in their query; the whole launcher output stays clean."""
    import json

    from websockets.sync.client import connect

    proc: subprocess.Popen = launcher["proc"]
    _wait_for_ready(launcher)
    base = f"http://127.0.0.1:{launcher['port']}"
    token = httpx.post(
        f"{base}/v1/auth/login",
        timeout=30,
        json={"username": "clinician", "password": "launcher-test-pass", "location_id": "demo"},
    ).json()["access_token"]
    key = "mk_0123abcd_" + "k" * 43  # the shape of an API key: redacted whether valid or not
    with connect(f"{base.replace('http://', 'ws://')}/ws/status/?token={token}", open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
    assert httpx.get(f"{base}/v1/models?token={token}", timeout=10).status_code == 401
    assert httpx.get(f"{base}/v1/nowhere?api_key={key}", timeout=10).status_code == 404

    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    output = "".join(launcher["output"])
    assert "GET /v1/models?token=[REDACTED]" in output  # the access log is on
    assert "/ws/status/?token=[REDACTED]" in output
    assert token not in output and token.split(".")[2] not in output and key not in output
