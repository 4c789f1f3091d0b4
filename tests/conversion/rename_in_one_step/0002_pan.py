# What makemigrations writes when the field is renamed and binding set in the same change.
import django_kms_fields.fields
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("conversion", "0001_initial")]
    operations = [
        migrations.RemoveField(model_name="card", name="number"),
        migrations.AddField(
            model_name="card",
            name="pan",
            field=django_kms_fields.fields.EncryptedTextField(binding="conversion.card.number", default=""),
            preserve_default=False,
        ),
    ]
