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
        if self.apps.is_installed("django.contrib.admin"):
            # Importing the admin module makes EncryptedFieldListFilter the default filter of encrypted fields.
            from . import admin, admin_checks  # noqa: F401

            checks.register(admin_checks.check_admin_options, checks.Tags.admin)
