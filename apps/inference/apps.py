from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "apps.inference"
    label = "inference"
    verbose_name = "Inference"

    def ready(self) -> None:
        # Imported here, not at the top: these import models, which the app registry loads first.
        from apps.gpu import inventory
        from apps.inference import metrics, monitoring, signals  # noqa: F401

        metrics.register()
        inventory.register(monitoring.SOURCE)  # the monitor's models (gpu never imports inference)
