import django_kms_fields.fields
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Person",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("ssn", models.TextField(null=True)),
                ("ssn_encrypted", django_kms_fields.fields.EncryptedTextField(null=True)),
            ],
        ),
    ]
