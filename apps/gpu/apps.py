from django.apps import AppConfig


class GpuConfig(AppConfig):
    name = "apps.gpu"
    label = "gpu"
    verbose_name = "GPU"

    def ready(self) -> None:
        # Imported here, not at the top: both import models, which the app registry loads first.
        from apps.gpu import metrics, signals  # noqa: F401

        metrics.register()
