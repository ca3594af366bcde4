from django.db import migrations

PACKS = [
    ("Starter", 100, 500, 10),
    ("Creator", 500, 2000, 20),
    ("Studio", 2000, 6000, 30),
]


def add_packs(apps, schema_editor):
    CreditPack = apps.get_model("billing", "CreditPack")
    if CreditPack.objects.exists():
        return
    for name, credits, cents, order in PACKS:
        CreditPack.objects.create(name=name, credits=credits, price_cents=cents, currency="usd", sort_order=order)


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_creditaccount_frozen_creditpack_order_stripeevent")]
    operations = [migrations.RunPython(add_packs, migrations.RunPython.noop)]
