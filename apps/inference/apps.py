from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "apps.inference"
    label = "inference"
    verbose_name = "Inference"

    def ready(self) -> None:
        # Imported here, not at the top: these import models, which the app registry loads first.
        from apps.gpu import inventory
        from apps.inference import metrics, monitoring, signals  # noqa: F401
        from apps.inference.filebatch import feed  # noqa: F401 - registers the queue hook that feeds file batches

        metrics.register()
        inventory.register(monitoring.SOURCE)  # the monitor's models (gpu never imports inference)
