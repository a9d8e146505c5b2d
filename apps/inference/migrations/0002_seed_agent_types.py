from django.db import migrations

AGENT_TYPES = [
    ("Chat", "General conversation.", "You are a helpful assistant for hospital staff."),
    ("MedicalQA", "Medical questions and answers.",
     "You are a careful medical assistant. Answer accurately and concisely; say when you are unsure."),
    ("Clinical", "Clinical decision support.",
     "You assist clinicians with clinical reasoning. Always recommend confirming with current guidelines."),
    ("Documentation", "Clinical notes and summaries.",
     "You help write clear, structured clinical documentation."),
    ("Billing", "Coding and billing questions.", "You help with medical coding and billing questions."),
    ("Claims", "Insurance claims.", "You help prepare and review insurance claims."),
]


def seed(apps, schema_editor):
    AgentRoute = apps.get_model("inference", "AgentRoute")
    for agent_type, description, prompt in AGENT_TYPES:
        AgentRoute.objects.get_or_create(agent_type=agent_type,
                                         defaults={"description": description, "system_prompt": prompt})


class Migration(migrations.Migration):
    dependencies = [("inference", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
