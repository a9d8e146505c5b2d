"""medai's admin site: Django's, with the dashboard on its index page (apps/inference/dashboard).

``MedaiAdminConfig`` stands for ``django.contrib.admin`` in INSTALLED_APPS and makes this site the
default one, so every ``admin.register`` of the apps lands here unchanged.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.template.response import TemplateResponse


class MedaiAdminSite(admin.AdminSite):
    site_header = "medai administration"
    site_title = "medai admin"
    index_title = "Dashboard"

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        """The app list, with the dashboard above it (staff only: admin_view requires staff)."""
        from apps.inference import dashboard  # the apps' models: loaded after the app registry

        context = {**(extra_context or {}), "dashboard": dashboard.page(request.user)}  # type: ignore[arg-type]
        return super().index(request, context)


class MedaiAdminConfig(AdminConfig):
    default_site = "medai.admin_site.MedaiAdminSite"
