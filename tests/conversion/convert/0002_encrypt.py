import django_kms_fields.fields
import django_kms_fields.operations
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("conversion", "0001_initial")]
    operations = [
        django_kms_fields.operations.ConvertToEncryptedField(
            model_name="record", name="body", field=django_kms_fields.fields.EncryptedTextField(accept_plaintext=True, null=True)
        ),
        django_kms_fields.operations.ConvertToEncryptedField(
            model_name="record", name="code", field=django_kms_fields.fields.EncryptedTextField(accept_plaintext=True, null=True)
        ),
        # A binary column needs no conversion: Django's own AlterField keeps its bytes.
        migrations.AlterField(
            model_name="record", name="scan", field=django_kms_fields.fields.EncryptedBinaryField(accept_plaintext=True, null=True)
        ),
    ]
