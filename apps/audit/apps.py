from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "apps.audit"
    label = "audit"
    verbose_name = "Audit"

    def ready(self) -> None:
        from apps.audit import admin_trail, metrics  # noqa: F401  (admin_trail connects the admin's signal receivers)

        metrics.register()
