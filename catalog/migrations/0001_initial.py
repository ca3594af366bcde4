# Adopts the catalog's tables that generation's migrations created (state
# only: no row moves); catalog 0002 renames them.

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('generation', '0017_hires'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Checkpoint',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('slug', models.SlugField(help_text='Stable id used by the API and the job queue.', max_length=80, unique=True)),
                        ('name', models.CharField(max_length=120)),
                        ('description', models.TextField(blank=True)),
                        ('family', models.CharField(choices=[('sd1', 'Stable Diffusion 1.x'), ('sd2', 'Stable Diffusion 2.x'), ('sd-turbo', 'SD-Turbo'), ('sdxl', 'SDXL'), ('sdxl-turbo', 'SDXL-Turbo'), ('sd3', 'Stable Diffusion 3'), ('flux', 'FLUX.1')], max_length=20)),
                        ('source_kind', models.CharField(choices=[('hub', 'Hugging Face repo'), ('folder', 'Local diffusers folder'), ('single_file', 'Single .safetensors file')], default='hub', max_length=20)),
                        ('source', models.CharField(help_text='Hugging Face repo id (org/name), a diffusers folder, or a .safetensors file. Relative paths are under MODELS_DIR.', max_length=500)),
                        ('revision', models.CharField(blank=True, help_text='Hub revision (branch, tag or commit).', max_length=100)),
                        ('variant', models.CharField(blank=True, help_text='Weight variant, e.g. "fp16".', max_length=20)),
                        ('dtype', models.CharField(choices=[('auto', 'Auto (fp16/bf16 on GPU, fp32 on CPU)'), ('float16', 'float16'), ('bfloat16', 'bfloat16'), ('float32', 'float32')], default='auto', max_length=10)),
                        ('is_test', models.BooleanField(default=False, help_text='Random weights built locally for tests and the offline demo: output is noise.')),
                        ('default_strength', models.FloatField(validators=[django.core.validators.MinValueValidator(0.01), django.core.validators.MaxValueValidator(1.0)])),
                        ('default_steps', models.PositiveSmallIntegerField(validators=[django.core.validators.MinValueValidator(1)])),
                        ('default_guidance', models.FloatField(validators=[django.core.validators.MinValueValidator(0.0), django.core.validators.MaxValueValidator(30.0)])),
                        ('max_side', models.PositiveSmallIntegerField(default=1024, help_text='Largest output width or height, pixels.', validators=[django.core.validators.MinValueValidator(64), django.core.validators.MaxValueValidator(2048)])),
                        ('max_steps', models.PositiveSmallIntegerField(default=50, validators=[django.core.validators.MaxValueValidator(150)])),
                        ('allowed_sizes', models.JSONField(blank=True, default=list, help_text='Output sizes offered, as [[width, height], ...]; empty: any multiple of 8 up to max side.')),
                        ('text_to_image', models.BooleanField(default=True, help_text='Makes pictures from a prompt alone (text to image). Off for checkpoints that only refine an input picture, like the SDXL refiner: they offer image to image only.')),
                        ('inpainting', models.BooleanField(default=False, help_text='A dedicated inpainting checkpoint (a 9-channel UNet: latents, mask, masked picture): it offers inpainting and outpainting only.')),
                        ('default_scheduler', models.CharField(blank=True, help_text="The sampler a job runs with unless it names one (catalog/samplers.py lists each family's); blank: the family's default.", max_length=24)),
                        ('price_per_image', models.PositiveIntegerField(help_text='Credits for one image of up to one megapixel at the default steps and strength (generation/pricing.py scales it by size, steps run and count).')),
                        ('enabled', models.BooleanField(default=True)),
                        ('sort_order', models.IntegerField(default=100)),
                        ('preview', models.ImageField(blank=True, upload_to='previews/')),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        'db_table': 'generation_checkpoint',
                        'ordering': ['sort_order', 'name'],
                    },
                ),
                migrations.CreateModel(
                    name='Tag',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('slug', models.SlugField(unique=True)),
                        ('name', models.CharField(max_length=40)),
                    ],
                    options={
                        'db_table': 'generation_tag',
                        'ordering': ['name'],
                    },
                ),
                migrations.CreateModel(
                    name='CheckpointTestRun',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed')], default='queued', max_length=10)),
                        ('worker', models.CharField(blank=True, max_length=200)),
                        ('device', models.CharField(blank=True, max_length=40)),
                        ('load_seconds', models.FloatField(blank=True, null=True)),
                        ('run_seconds', models.FloatField(blank=True, null=True)),
                        ('error_kind', models.CharField(blank=True, max_length=20)),
                        ('error', models.TextField(blank=True)),
                        ('result_png', models.BinaryField(blank=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('checkpoint', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='test_runs', to='catalog.checkpoint')),
                        ('requested_by', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'generation_checkpointtestrun',
                        'ordering': ['-created_at'],
                    },
                ),
                migrations.CreateModel(
                    name='ControlNet',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('slug', models.SlugField(help_text='Stable id used by the API (`control`).', max_length=80, unique=True)),
                        ('name', models.CharField(max_length=120)),
                        ('description', models.TextField(blank=True)),
                        ('family', models.CharField(choices=[('sd1', 'Stable Diffusion 1.x'), ('sd2', 'Stable Diffusion 2.x'), ('sd-turbo', 'SD-Turbo'), ('sdxl', 'SDXL'), ('sdxl-turbo', 'SDXL-Turbo'), ('sd3', 'Stable Diffusion 3'), ('flux', 'FLUX.1')], help_text="The family it was trained on; it fits every checkpoint of that family's architecture.", max_length=20)),
                        ('kind', models.CharField(choices=[('canny', 'Canny edges'), ('scribble', 'Scribble'), ('depth', "Depth (needs its annotator's weights)"), ('openpose', "Pose (needs its annotator's weights)"), ('lineart', "Line art (needs its annotator's weights)")], help_text="The map it is conditioned on; a job's default preprocess.", max_length=20)),
                        ('source_kind', models.CharField(choices=[('hub', 'Hugging Face repo'), ('folder', 'Local diffusers folder'), ('single_file', 'Single .safetensors file')], default='hub', max_length=20)),
                        ('source', models.CharField(help_text='Hugging Face repo id (org/name) or a diffusers folder (relative paths are under MODELS_DIR).', max_length=500)),
                        ('revision', models.CharField(blank=True, max_length=100)),
                        ('variant', models.CharField(blank=True, help_text='Weight variant, e.g. "fp16".', max_length=20)),
                        ('is_test', models.BooleanField(default=False, help_text='Random weights built locally for tests.')),
                        ('cost_factor', models.FloatField(default=1.5, help_text="Its jobs cost this many times the checkpoint's price: the ControlNet runs beside the UNet at every step (bench/controlnet_cost.py measures it).", validators=[django.core.validators.MinValueValidator(1.0), django.core.validators.MaxValueValidator(4.0)])),
                        ('enabled', models.BooleanField(default=True)),
                        ('sort_order', models.IntegerField(default=100)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        'verbose_name': 'ControlNet',
                        'db_table': 'generation_controlnet',
                        'ordering': ['sort_order', 'name'],
                        'constraints': [models.CheckConstraint(condition=models.Q(('cost_factor__gte', 1), ('cost_factor__lte', 4)), name='controlnet_cost_factor_range')],
                    },
                ),
                migrations.AddField(
                    model_name='checkpoint',
                    name='tags',
                    field=models.ManyToManyField(blank=True, related_name='checkpoints', to='catalog.tag'),
                ),
                migrations.CreateModel(
                    name='Lora',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('slug', models.SlugField(help_text='Stable id used by the API (`loras`).', max_length=80, unique=True)),
                        ('name', models.CharField(max_length=120)),
                        ('description', models.TextField(blank=True)),
                        ('family', models.CharField(choices=[('sd1', 'Stable Diffusion 1.x'), ('sd2', 'Stable Diffusion 2.x'), ('sd-turbo', 'SD-Turbo'), ('sdxl', 'SDXL'), ('sdxl-turbo', 'SDXL-Turbo'), ('sd3', 'Stable Diffusion 3'), ('flux', 'FLUX.1')], help_text="The family it was trained on; it fits every checkpoint of that family's architecture.", max_length=20)),
                        ('source', models.CharField(help_text="One .safetensors file, diffusers' or kohya's key layout (a relative path is under MODELS_DIR).", max_length=500)),
                        ('is_test', models.BooleanField(default=False, help_text='Random weights built locally for tests.')),
                        ('trigger_words', models.CharField(blank=True, help_text='Words it was trained on; the create page adds them to the prompt.', max_length=200)),
                        ('default_weight', models.FloatField(default=1.0, help_text="A job's weight when it names the LoRA without one.", validators=[django.core.validators.MinValueValidator(-2.0), django.core.validators.MaxValueValidator(2.0)])),
                        ('price_per_image', models.PositiveIntegerField(default=0, help_text='Credits added to each image of a job that uses it (0: free).')),
                        ('enabled', models.BooleanField(default=True)),
                        ('sort_order', models.IntegerField(default=100)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('tags', models.ManyToManyField(blank=True, related_name='loras', to='catalog.tag')),
                    ],
                    options={
                        'verbose_name': 'LoRA',
                        'db_table': 'generation_lora',
                        'ordering': ['sort_order', 'name'],
                        'constraints': [models.CheckConstraint(condition=models.Q(('default_weight__gte', -2.0), ('default_weight__lte', 2.0)), name='lora_default_weight_range')],
                    },
                ),
                migrations.AddConstraint(
                    model_name='checkpoint',
                    constraint=models.CheckConstraint(condition=models.Q(('default_steps__lte', models.F('max_steps'))), name='checkpoint_default_steps_within_max'),
                ),
                migrations.AddConstraint(
                    model_name='checkpoint',
                    constraint=models.CheckConstraint(condition=models.Q(('default_strength__gt', 0), ('default_strength__lte', 1)), name='checkpoint_strength_range'),
                ),
                migrations.AddConstraint(
                    model_name='checkpoint',
                    constraint=models.CheckConstraint(condition=models.Q(('price_per_image__gte', 1)), name='checkpoint_price_positive'),
                ),
            ],
            database_operations=[],
        ),
    ]
