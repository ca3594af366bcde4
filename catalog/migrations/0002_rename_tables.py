# The adopted tables take the catalog app's names (with their many-to-many
# tables: checkpoints' and LoRAs' tags), and the content types (so
# permissions and the admin's history) follow the models from generation.

from django.db import migrations

MODELS = ('tag', 'checkpoint', 'controlnet', 'lora', 'checkpointtestrun')


def content_types_to_catalog(apps, schema_editor):
    ContentType = apps.get_model('contenttypes', 'ContentType')
    for model in MODELS:
        old = ContentType.objects.filter(app_label='generation', model=model).first()
        if old is None:
            continue
        # A catalog row made by an earlier, partial migrate has no grants yet:
        # it goes, and the old row (with the permissions people hold) moves.
        ContentType.objects.filter(app_label='catalog', model=model).delete()
        old.app_label = 'catalog'
        old.save(update_fields=['app_label'])


def content_types_to_generation(apps, schema_editor):
    ContentType = apps.get_model('contenttypes', 'ContentType')
    ContentType.objects.filter(app_label='catalog', model__in=MODELS).update(app_label='generation')


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0001_initial'),
        ('generation', '0018_catalog_models_move_to_catalog'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.AlterModelTable(name='tag', table=None),
        migrations.AlterModelTable(name='checkpoint', table=None),
        migrations.AlterModelTable(name='controlnet', table=None),
        migrations.AlterModelTable(name='lora', table=None),
        migrations.AlterModelTable(name='checkpointtestrun', table=None),
        migrations.RunPython(content_types_to_catalog, content_types_to_generation),
    ]
