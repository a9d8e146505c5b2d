"""CSRF: the admin (the only session-cookie surface) refuses a POST without the CSRF token and
accepts one with it; the JSON API takes no session cookie at all, so a forged cross-site request
with an admin's cookies has nothing to ride on."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", password=PASSWORD)


def test_the_admin_login_refuses_a_post_without_the_token(root):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/admin/login/", {"username": "root", "password": PASSWORD})
    assert response.status_code == 403


def test_the_admin_login_accepts_a_post_with_the_token(root):
    client = Client(enforce_csrf_checks=True)
    client.get("/admin/login/")
    token = client.cookies["csrftoken"].value
    response = client.post("/admin/login/", {"username": "root", "password": PASSWORD, "csrfmiddlewaretoken": token})
    assert response.status_code == 302


def test_an_admin_change_without_the_token_is_refused(root):
    client = Client(enforce_csrf_checks=True)
    client.force_login(root)
    response = client.post("/admin/accounts/organization/add/", {"name": "Forged"})
    assert response.status_code == 403


def test_the_api_ignores_session_cookies(root):
    client = Client(enforce_csrf_checks=True)
    client.force_login(root)
    assert client.get("/v1/models").status_code == 401
    assert client.post("/v1/async/submit", b"{}", content_type="application/json").status_code == 401
