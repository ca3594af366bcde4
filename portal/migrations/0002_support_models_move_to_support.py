# The support chat's models moved to the support app. State only: the tables
# and every row stay; support 0001 adopts them and support 0002 renames them.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('portal', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='Message'),
                migrations.DeleteModel(name='Conversation'),
            ],
            database_operations=[],
        ),
    ]
