"""``manage.py bootstrap_demo``: the demo tenant, users and bundled models (idempotent)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.inference.demo import bootstrap_demo


class Command(BaseCommand):
    help = (
        "Create the Demo organization, location 'demo', users admin and clinician, and register the bundled "
        "model and its embeddings model, each with its supervised llama.cpp server."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--llama-port", type=int, default=None, help="Port of the bundled llama.cpp server.")
        parser.add_argument(
            "--embed-port", type=int, default=None, help="Port of the bundled llama.cpp embeddings server."
        )
        parser.add_argument(
            "--no-llama",
            action="store_true",
            help="Register the bundled llama.cpp servers without autostart (the monitor leaves them off).",
        )
        parser.add_argument(
            "--no-embeddings",
            action="store_true",
            help="Register the bundled embeddings server without autostart (the chat server still starts).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        result = bootstrap_demo(
            llama_port=options["llama_port"],
            embed_port=options["embed_port"],
            autostart=not options["no_llama"],
            embeddings=not options["no_embeddings"],
        )
        self.stdout.write(
            f"demo location: {result.location.code}; users: admin, clinician; model: {result.endpoint_name}; "
            f"embeddings: {result.embeddings_endpoint_name}"
        )
        if result.password_source == "generated":
            # A terminal shows it; a log (the launcher's output, a CI job's) never holds a credential.
            shown = result.password if self.stdout.isatty() else "not shown here"
            self.stdout.write(f"generated demo password: {shown} (stored in var/demo-password, mode 0600)")
