# What makemigrations writes when the field classes change: it would mangle or keep the text.
import django_kms_fields.fields
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("conversion", "0001_initial")]
    operations = [
        migrations.AlterField(
            model_name="record", name="body", field=django_kms_fields.fields.EncryptedTextField(accept_plaintext=True, null=True)
        ),
    ]
