"""Record when a task's content was purged, beside its outcome (issue 8, item 12).

Until now the retention sweep turned a finished task into ``expired``; the outcome of those tasks
is restored from what the row still says (no error: completed; an error: failed), and their
purge time is taken as the end of their retention. Tasks that expired at their deadline or were
cancelled lost their prompt then: that is their purge time.
"""

from django.db import migrations, models
from django.db.models import F, Q


def restore_outcomes(apps, schema_editor):
    Task = apps.get_model("inference", "InferenceTask")
    purged = Task.objects.filter(status="expired", result_expires_at__isnull=False).exclude(
        error_code="deadline_exceeded")
    purged.filter(error_code="").update(status="completed", content_purged_at=F("result_expires_at"))
    purged.exclude(error_code="").update(status="failed", content_purged_at=F("result_expires_at"))
    Task.objects.filter(Q(status="cancelled") | Q(status="expired", error_code="deadline_exceeded"),
                        mode="async", content_purged_at__isnull=True).update(content_purged_at=F("finished_at"))


class Migration(migrations.Migration):

    dependencies = [
        ('inference', '0006_task_tool_use_and_end_user'),
    ]

    operations = [
        migrations.AddField(
            model_name='inferencetask',
            name='content_purged_at',
            field=models.DateTimeField(blank=True, help_text='When the prompt and result were purged (retention, cancel, expiry).', null=True),
        ),
        migrations.RunPython(restore_outcomes, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name='inferencetask',
            index=models.Index(condition=models.Q(('content_purged_at__isnull', True)), fields=['result_expires_at'], name='task_purge_due'),
        ),
    ]
