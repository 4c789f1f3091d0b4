# The README's data migration: no `using`, so it must fill the database being migrated.
from django.db import migrations

from django_kms_fields.rewrite import copy_plaintext_column


def copy(apps, schema_editor):
    copy_plaintext_column(apps.get_model("conversion", "Person"), "ssn", "ssn_encrypted", batch_size=2)


class Migration(migrations.Migration):
    dependencies = [("conversion", "0001_initial")]
    operations = [migrations.RunPython(copy, migrations.RunPython.noop)]
