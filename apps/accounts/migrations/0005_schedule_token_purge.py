"""Schedule the purge of expired token revocations (apps.accounts.tasks.purge_expired_tokens) hourly:
every logout writes two rows and every login an outstanding refresh token; none is needed once
the token it names has expired."""

from __future__ import annotations

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

FUNC = "apps.accounts.tasks.purge_expired_tokens"


def add_schedule(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Schedule = apps.get_model("django_q", "Schedule")
    if not Schedule.objects.filter(func=FUNC).exists():
        Schedule.objects.create(name="accounts: purge expired token revocations", func=FUNC, schedule_type="H",
                                repeats=-1)


def remove_schedule(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    apps.get_model("django_q", "Schedule").objects.filter(func=FUNC).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_keys_sessions_break_glass"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
