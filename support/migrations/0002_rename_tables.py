# The adopted tables take the support app's names, and the content types
# (so permissions and admin history) follow the models from portal.

from django.db import migrations


def content_types_to_support(apps, schema_editor):
    ContentType = apps.get_model('contenttypes', 'ContentType')
    for model in ('conversation', 'message'):
        old = ContentType.objects.filter(app_label='portal', model=model).first()
        if old is None:
            continue
        # A support row made by an earlier, partial migrate has no grants yet:
        # it goes, and the old row (with the permissions people hold) moves.
        ContentType.objects.filter(app_label='support', model=model).delete()
        old.app_label = 'support'
        old.save(update_fields=['app_label'])


def content_types_to_portal(apps, schema_editor):
    ContentType = apps.get_model('contenttypes', 'ContentType')
    ContentType.objects.filter(app_label='support', model__in=['conversation', 'message']).update(app_label='portal')


class Migration(migrations.Migration):

    dependencies = [
        ('support', '0001_initial'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.AlterModelTable(name='conversation', table=None),
        migrations.AlterModelTable(name='message', table=None),
        migrations.RunPython(content_types_to_support, content_types_to_portal),
    ]
