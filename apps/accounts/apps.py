from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        # Imported for its side effect (it registers the OpenAPI auth extension with
        # drf-spectacular): ready() is where an app does that, once its registry is loaded.
        from apps.accounts import lockout, schema, signals  # noqa: F401  (signals: credentials follow model changes)
        from apps.accounts.governance import metrics, quotas

        metrics.register()
        quotas.connect_signals()  # quota changes reach Redis (the request path's only source)
