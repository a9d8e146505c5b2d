"""The clinician web page. It is a client of the public API like any integrator: the view only
renders the page; sign-in, models and streaming answers go through /v1 from the browser."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def index(request: HttpRequest) -> HttpResponse:
    # Its Content-Security-Policy (scripts and styles from this origin only: injected markup cannot
    # run) is every page's, settings.MEDAI_CSP, set by medai's SecurityHeadersMiddleware.
    return render(request, "ui/index.html", {"default_location": settings.MEDAI_DEFAULT_LOCATION})
