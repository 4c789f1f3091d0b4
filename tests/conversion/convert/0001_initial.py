from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Record",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("body", models.TextField(null=True)),
                ("code", models.CharField(max_length=64, null=True)),
                ("scan", models.BinaryField(null=True)),
            ],
        ),
    ]
