# Adopts the tables that portal 0001 created (state only: no row moves).

import django.db.models.deletion
import uuid
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('portal', '0002_support_models_move_to_support'),
        ('generation', '0002_alter_checkpoint_price_per_image_job_jobimage_and_more'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Conversation',
                    fields=[
                        ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ('visitor_hash', models.CharField(blank=True, db_index=True, max_length=64)),
                        ('status', models.CharField(choices=[('open', 'Open'), ('snoozed', 'Snoozed'), ('resolved', 'Resolved')], db_index=True, default='open', max_length=10)),
                        ('person_read_id', models.BigIntegerField(default=0)),
                        ('staff_read_id', models.BigIntegerField(default=0)),
                        ('last_message_at', models.DateTimeField(blank=True, db_index=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('assigned_to', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('job', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='generation.job')),
                        ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='conversations', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'ordering': ['-last_message_at'],
                        'db_table': 'portal_conversation',
                    },
                ),
                migrations.CreateModel(
                    name='Message',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('sender', models.CharField(choices=[('person', 'Person'), ('staff', 'Staff'), ('system', 'System')], max_length=8)),
                        ('client_id', models.CharField(blank=True, max_length=64)),
                        ('body', models.TextField()),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('emailed_at', models.DateTimeField(blank=True, null=True)),
                        ('author', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('conversation', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='messages', to='support.conversation')),
                    ],
                    options={
                        'ordering': ['id'],
                        'db_table': 'portal_message',
                        'constraints': [models.UniqueConstraint(condition=models.Q(('client_id', ''), _negated=True), fields=('conversation', 'client_id'), name='message_client_id_unique')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
