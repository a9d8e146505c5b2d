"""A JSON endpoint sent a body that is not declared JSON answers 415, OpenAI-shaped, naming the
Content-Type header, before anything is read or authenticated; JSON with a charset or a +json type
is accepted, and a POST without a body (cancel, logout) needs no Content-Type."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

BODY = b'{"model": "Chat", "messages": [{"role": "user", "content": "hi"}]}'


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/async/submit", "/v1/async/submit-batch", "/v1/auth/login", "/v1/auth/refresh"]
)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
def test_a_body_that_is_not_json_answers_415_naming_the_header(live_medai, path, content_type):
    headers = {"Authorization": "Bearer nobody"}
    if content_type:
        headers["Content-Type"] = content_type
    response = httpx.post(live_medai + path, content=BODY, headers=headers, timeout=30)
    assert response.status_code == 415, (path, response.text)
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type" and error["param"] == "Content-Type"
    assert "application/json" in error["message"] and (content_type or "none").split(";")[0] in error["message"]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/merge-patch+json"]
)
def test_json_content_types_pass_to_the_endpoint(live_medai, content_type):
    response = httpx.post(
        live_medai + "/v1/chat/completions",
        content=BODY,
        headers={"Content-Type": content_type, "Authorization": "Bearer nobody"},
        timeout=30,
    )
    assert response.status_code == 401  # reached authentication: the type was accepted


def test_a_post_without_a_body_needs_no_content_type(live_medai, alice, token_for):
    response = httpx.post(
        live_medai + "/v1/auth/logout", headers={"Authorization": f"Bearer {token_for(alice)}"}, timeout=30
    )
    assert response.status_code != 415
