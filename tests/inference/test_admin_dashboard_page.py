"""The admin index is the dashboard: staff see the figures (their organization's; a superuser
everyone's) drawn as inline SVG above the app list; anyone else is sent to the admin's login.
Its socket, ``/ws/admin/dashboard/``, takes the staff session from this site only, refuses API
credentials (4403), and sends the queue and GPU figures on connect and again as they change."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from apps.accounts.models import Location, Organization, User
from apps.gpu.monitor import Monitor
from apps.gpu.providers import SimulatedProvider
from apps.inference.models import InferenceTask, Priority
from medai.asgi import application
from tests.conftest import PASSWORD

S = InferenceTask.Status


def task(location: Location, minutes_ago: float = 1, **fields: object) -> InferenceTask:
    values: dict[str, object] = {"mode": "sync", "status": S.COMPLETED, "model_name": "smol"}
    values.update(fields)
    return InferenceTask.objects.create(
        location=location, created_at=timezone.now() - timedelta(minutes=minutes_ago), **values
    )


@pytest.fixture
def records(demo, north) -> None:
    east = Location.objects.create(
        organization=Organization.objects.create(name="Eastside Clinic"), code="east", name="East wing"
    )
    for tokens in (1200, 800, 2000):
        task(demo, prompt_tokens=tokens, completion_tokens=100, inference_ms=250)
    task(north, model_name="big", status=S.FAILED, http_status=502, error_code="backend_error")
    task(east, prompt_tokens=99_000)
    for prio in (Priority.HIGH, Priority.HIGH, Priority.LOW):
        task(demo, mode="async", status=S.QUEUED, priority=prio, queued_at=timezone.now())


@pytest.fixture
def ivy(org) -> User:
    return User.objects.create_user("ivy", password=PASSWORD, role="admin", organization=org, is_staff=True)


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_a_superuser_sees_every_organization_s_figures_as_charts(records):
    root = User.objects.create_superuser("root", password=PASSWORD)
    response = _client(root).get("/admin/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Numbers of <strong>all organizations</strong>" in html
    assert len(re.findall(r'<rect class="md-column"', html)) == 48  # two charts of 24 hours
    for code in ("demo", "north", "east"):
        assert f'<span class="md-code">{code}</span>' in html
    # Requests, last hour: 3 + 1 + 1 + 3 queued; tokens 4,300 + 99,000 = 103k
    assert re.search(r"Requests, last hour</span><span class=\"md-kpi-value\">8<", html)
    assert re.search(r"Tokens, last hour</span><span class=\"md-kpi-value\">103k<", html)
    assert 'data-live="queue.high">2<' in html and 'data-live="queue.low">1<' in html
    assert "Model endpoints" in html  # the app list is still there, below


@pytest.mark.django_db
def test_staff_of_an_organization_see_only_its_numbers(records, ivy):
    html = _client(ivy).get("/admin/").content.decode()
    assert "Numbers of <strong>Demo Hospital</strong>" in html
    assert '<span class="md-code">demo</span>' in html and '<span class="md-code">east</span>' not in html
    assert re.search(r"Tokens, last hour</span><span class=\"md-kpi-value\">4.3k<", html)
    # the failed request of big: 1 of 1, a backend fault
    assert re.search(r'<th scope="row" class="md-code">big <span class="md-badge">not registered</span></th>', html)
    assert "100\u00a0%" in html


@pytest.mark.django_db
def test_anyone_but_staff_is_sent_to_the_login(alice):
    assert Client().get("/admin/").status_code == 302
    response = _client(alice).get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_an_empty_installation_renders_without_figures():
    root = User.objects.create_superuser("root", password=PASSWORD)
    html = _client(root).get("/admin/").content.decode()
    assert "No requests in the last 24 hours." in html and "No quota is set" in html
    assert "No GPU reading" in html or 'class="md-gpu"' in html


# --- the live socket ---------------------------------------------------------------------------


def _socket(session: str | None, origin: str | None = "http://testserver", **kwargs: object) -> WebsocketCommunicator:
    headers = [(b"host", b"testserver")]
    if session:
        headers.append((b"cookie", f"sessionid={session}".encode()))
    if origin:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, "/ws/admin/dashboard/", headers=headers, **kwargs)


async def _frame(socket: WebsocketCommunicator) -> dict:
    message = await socket.receive_output(timeout=10)
    assert message["type"] == "websocket.send", message
    return json.loads(message["text"])


@pytest.mark.django_db(transaction=True)
async def test_the_dashboard_socket_sends_the_queue_and_gpu_figures_live(records, ivy, settings):
    settings.MEDAI_DASHBOARD_REFRESH_SECONDS = 0.2
    settings.MEDAI_GPU_STATE_CACHE_SECONDS = 0.0  # every read of the GPU state goes to Redis
    session = await sync_to_async(lambda: _client(ivy).cookies["sessionid"].value)()
    socket = _socket(session)
    assert (await socket.connect(timeout=10))[0]
    first = await _frame(socket)
    assert first["type"] == "dashboard.live"
    depth = {d["priority"]: d["queued"] for d in first["data"]["queue"]["depth"]}
    assert depth == {"critical": 0, "high": 2, "normal": 0, "low": 1}
    demo = await sync_to_async(Location.objects.get)(code="demo")
    await sync_to_async(task)(demo, mode="async", status=S.QUEUED, priority=Priority.CRITICAL, queued_at=timezone.now())
    for _ in range(20):  # the next refresh counts it
        frame = await _frame(socket)
        if "queue" in frame["data"] and frame["data"]["queue"]["depth"][0]["queued"] == 1:
            break
    else:
        pytest.fail("the new critical task never showed")
    await sync_to_async(Monitor(SimulatedProvider(), supervise=False).sample)()  # a GPU sample is pushed
    for _ in range(20):
        frame = await _frame(socket)
        if frame["data"].get("gpu", {}).get("gpus"):
            gpu = frame["data"]["gpu"]
            break
    else:
        pytest.fail("no GPU sample came")
    assert gpu["simulated"] is True and gpu["gpus"][0]["simulated"] is True
    assert gpu["gpus"][0]["total_mb"] > 0 and 0 <= gpu["gpus"][0]["bar"] <= 100
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_dashboard_socket_refuses_other_origins_and_api_credentials(ivy, alice, token_for):
    session = await sync_to_async(lambda: _client(ivy).cookies["sessionid"].value)()
    token = await sync_to_async(token_for)(alice)
    cases = [
        (_socket(session, origin="https://evil.example"), 4403),  # cross-site websocket hijacking
        (_socket(None), 4401),
        (_socket(None, subprotocols=["bearer", token]), 4403),  # an API credential: not this page's
    ]
    for socket, code in cases:
        assert (await socket.connect(timeout=10))[0]
        assert await socket.receive_output(timeout=10) == {"type": "websocket.close", "code": code}
