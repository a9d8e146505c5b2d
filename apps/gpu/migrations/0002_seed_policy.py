"""Seed the GPU policy table of DESIGN.md and one simulated GPU (used only by the simulated provider)."""

from django.db import migrations

LEVELS = [
    ("LOW", 0.0, "all", 8, 4),
    ("NORMAL", 50.0, "all", 6, 2),
    ("HIGH", 70.0, "top_n", 4, 1),
    ("CRITICAL", 85.0, "fits_free", 1, 0),
]
THERMAL = [
    ("NORMAL", -273.0, 1.0, True, True),
    ("REDUCE", 65.0, 0.5, True, True),
    ("PAUSE", 80.0, 0.0, False, True),
    ("STOP", 85.0, 0.0, False, False),
]


def seed(apps, schema_editor):
    PressureLevel = apps.get_model("gpu", "PressureLevel")
    ThermalRule = apps.get_model("gpu", "ThermalRule")
    PolicySettings = apps.get_model("gpu", "PolicySettings")
    SimulatedGpu = apps.get_model("gpu", "SimulatedGpu")
    for level, start, allowed, batch, conc in LEVELS:
        PressureLevel.objects.get_or_create(level=level, defaults=dict(
            memory_from_percent=start, models_allowed=allowed, top_n=2, batch_size=batch, concurrency=conc))
    for state, start, factor, new, critical in THERMAL:
        ThermalRule.objects.get_or_create(state=state, defaults=dict(
            from_celsius=start, load_factor=factor, admits_new_work=new, admits_critical=critical))
    if not PolicySettings.objects.exists():
        PolicySettings.objects.create()
    SimulatedGpu.objects.get_or_create(index=0, defaults=dict(name="Simulated GPU 0 (no hardware)",
                                                               memory_total_mb=16384))


class Migration(migrations.Migration):
    dependencies = [("gpu", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
