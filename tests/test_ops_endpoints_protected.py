"""/metrics and /readyz answer only the metrics bearer token (or a staff session) and the API schema
and docs only a staff login, in production (MEDAI_OPS_OPEN off); in development and test all four
are open; /healthz is open everywhere."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

TOKEN = "ops-token-0123456789abcdef0123456789abcdef"


@pytest.fixture
def production(settings):
    settings.MEDAI_OPS_OPEN = False
    settings.MEDAI_METRICS_TOKEN = TOKEN


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops", password="correct-horse-battery", is_staff=True)


@pytest.mark.parametrize("path", ["/metrics", "/readyz"])
def test_token_endpoints_refuse_anyone_without_the_token(client, production, path):
    response = client.get(path)
    assert response.status_code == 401 and "Bearer" in response["WWW-Authenticate"]
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401


@pytest.mark.parametrize("path", ["/metrics", "/readyz"])
def test_token_endpoints_answer_the_token_and_staff(client, production, staff, path):
    assert client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code in (200, 503)
    client.force_login(staff)
    assert client.get(path).status_code in (200, 503)


def test_without_a_configured_token_metrics_stay_closed(client, settings):
    settings.MEDAI_OPS_OPEN, settings.MEDAI_METRICS_TOKEN = False, ""
    response = client.get("/metrics", headers={"Authorization": "Bearer "})
    assert response.status_code == 401 and "MEDAI_METRICS_TOKEN" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_docs_need_a_staff_login(client, production, staff, alice, path):
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client.force_login(alice)  # a clinician is not staff
    assert client.get(path).status_code == 302
    client.force_login(staff)
    assert client.get(path).status_code == 200


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/api/schema/", "/api/docs/"])
def test_open_in_development_and_test(client, path, settings):
    assert settings.MEDAI_OPS_OPEN  # MEDAI_ENV=test
    assert client.get(path).status_code in (200, 503)


def test_liveness_is_open_everywhere(client, production):
    assert client.get("/healthz").status_code == 200
