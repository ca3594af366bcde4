"""Jobs get a mode (image to image or text to image; existing rows are image
to image); checkpoints say whether they do text to image. A seeded SDXL
refiner already in the catalog is marked as image to image only."""

from django.conf import settings
from django.db import migrations, models

import generation.models

REFINER_REPO = "stabilityai/stable-diffusion-xl-refiner-1.0"


def refiners_refine_only(apps, schema_editor):
    Checkpoint = apps.get_model("generation", "Checkpoint")
    Checkpoint.objects.filter(source_kind="hub", source=REFINER_REPO).update(text_to_image=False)


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0010_fair_queue_and_retention_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="checkpoint",
            name="text_to_image",
            field=models.BooleanField(
                default=True,
                help_text="Makes pictures from a prompt alone (text to image). Off for checkpoints that only refine an input picture, like the SDXL refiner: they offer image to image only.",
            ),
        ),
        migrations.RunPython(refiners_refine_only, migrations.RunPython.noop),
        migrations.AddField(
            model_name="job",
            name="mode",
            field=models.CharField(
                choices=[
                    ("img2img", "Image to image"),
                    ("txt2img", "Text to image"),
                    ("inpaint", "Inpainting"),
                    ("controlnet", "ControlNet"),
                ],
                db_default="img2img",
                default="img2img",
                max_length=12,
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="input_image",
            field=models.FileField(
                blank=True,
                max_length=300,
                storage=generation.models.private_storage,
                upload_to=generation.models._input_path,
            ),
        ),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("input_image", ""), ("mode", "txt2img"), ("strength", 1)),
                    models.Q(
                        models.Q(("mode", "txt2img"), _negated=True),
                        models.Q(
                            models.Q(("input_image", ""), _negated=True), ("expired_at__isnull", False), _connector="OR"
                        ),
                    ),
                    _connector="OR",
                ),
                name="job_input_by_mode",
            ),
        ),
    ]
