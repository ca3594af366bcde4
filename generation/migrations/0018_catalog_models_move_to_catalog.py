# The catalog's models moved to the catalog app. State only: the tables, their
# rows and the jobs' foreign keys stay; catalog 0001 adopts the tables and
# catalog 0002 renames them.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0001_initial'),
        ('generation', '0017_hires'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='job',
                    name='checkpoint',
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='jobs', to='catalog.checkpoint'),
                ),
                migrations.RemoveField(
                    model_name='checkpointtestrun',
                    name='checkpoint',
                ),
                migrations.RemoveField(
                    model_name='checkpointtestrun',
                    name='requested_by',
                ),
                migrations.AlterField(
                    model_name='job',
                    name='controlnet',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='jobs', to='catalog.controlnet', verbose_name='ControlNet'),
                ),
                migrations.RemoveField(
                    model_name='lora',
                    name='tags',
                ),
                migrations.DeleteModel(
                    name='Checkpoint',
                ),
                migrations.DeleteModel(
                    name='CheckpointTestRun',
                ),
                migrations.DeleteModel(
                    name='ControlNet',
                ),
                migrations.DeleteModel(
                    name='Lora',
                ),
                migrations.DeleteModel(
                    name='Tag',
                ),
            ],
            database_operations=[],
        ),
    ]
