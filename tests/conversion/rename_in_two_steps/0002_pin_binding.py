# Step one: pin the binding to the current label (no change in the database).
import django_kms_fields.fields
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("conversion", "0001_initial")]
    operations = [
        migrations.AlterField(
            model_name="card", name="number", field=django_kms_fields.fields.EncryptedTextField(binding="conversion.card.number")
        ),
    ]
