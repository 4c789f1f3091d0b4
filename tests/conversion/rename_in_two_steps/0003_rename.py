# Step two: rename the field and the model; makemigrations asks, and writes renames.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("conversion", "0002_pin_binding")]
    operations = [
        migrations.RenameField(model_name="card", old_name="number", new_name="pan"),
        migrations.RenameModel(old_name="Card", new_name="PaymentCard"),
    ]
