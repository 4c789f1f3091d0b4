from django.apps import AppConfig
from django.core import checks


class KMSFieldsConfig(AppConfig):
    name = "django_kms_fields"
    label = "django_kms_fields"
    verbose_name = "KMS encrypted fields"

    def ready(self) -> None:
        from . import checks as kms_checks

        checks.register(kms_checks.check_settings, checks.Tags.security)
        checks.register(kms_checks.check_botocore_logging, checks.Tags.security)
        checks.register(kms_checks.check_accept_plaintext, checks.Tags.security, deploy=True)
        checks.register(kms_checks.check_migrations, checks.Tags.database)
