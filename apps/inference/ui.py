"""The clinician web page. It is a client of the public API like any integrator: the view only
renders the page; sign-in, models and streaming answers go through /v1 from the browser."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def index(request: HttpRequest) -> HttpResponse:
    response = render(request, "ui/index.html", {"default_location": settings.MEDAI_DEFAULT_LOCATION})
    # Scripts and styles come only from this origin: injected markup cannot run.
    response["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    return response
