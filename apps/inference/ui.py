"""The clinician web pages: Ask, History, Tasks, System. Each is a client of the public API like
any integrator: a view only renders its page; sign-in, data and live updates go through /v1 and
the websockets from the browser (static/medai/*.js), never a second code path."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

# (page, label, url): the main navigation, in order.
PAGES = (
    ("ask", "Ask", "/"),
    ("history", "History", "/history/"),
    ("tasks", "Tasks", "/tasks/"),
    ("system", "System", "/system/"),
)


def _page(request: HttpRequest, page: str) -> HttpResponse:
    # Their Content-Security-Policy (scripts and styles from this origin only: injected markup
    # cannot run) is every page's, settings.MEDAI_CSP, set by medai's SecurityHeadersMiddleware.
    context = {
        "page": page,
        "nav": [{"page": p, "label": label, "url": url} for p, label, url in PAGES],
        "default_location": settings.MEDAI_DEFAULT_LOCATION,
        "idle_seconds": settings.MEDAI_UI_IDLE_SECONDS,
    }
    return render(request, f"ui/{page}.html", context)


def index(request: HttpRequest) -> HttpResponse:
    return _page(request, "ask")


def history(request: HttpRequest) -> HttpResponse:
    return _page(request, "history")


def tasks(request: HttpRequest) -> HttpResponse:
    return _page(request, "tasks")


def system(request: HttpRequest) -> HttpResponse:
    return _page(request, "system")
