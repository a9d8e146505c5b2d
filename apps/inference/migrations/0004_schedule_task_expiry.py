"""Schedule the queue's expiry and retention sweep (apps.inference.tasks.expire_tasks) every minute."""

from django.db import migrations

FUNC = "apps.inference.tasks.expire_tasks"


def add_schedule(apps, schema_editor):  # type: ignore[no-untyped-def]
    Schedule = apps.get_model("django_q", "Schedule")
    if not Schedule.objects.filter(func=FUNC).exists():
        Schedule.objects.create(name="inference: expire and purge", func=FUNC, schedule_type="I", minutes=1,
                                repeats=-1)


def remove_schedule(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("django_q", "Schedule").objects.filter(func=FUNC).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0003_async_queue"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
