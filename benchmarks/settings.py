"""Settings for the benchmark run; ``benchmarks.__main__`` sets the environment before Django starts."""

import os

SECRET_KEY = "benchmark-only-secret-key"
SALT_KEY = "benchmark-only-salt"  # django-fernet-encrypted-fields derives its key from these two
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django_kms_fields", "encrypted_fields", "benchmarks.benchapp"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["BENCH_DATABASE"]}}

_endpoint = os.environ["BENCH_KMS_ENDPOINT"]
KMS_FIELDS = {
    "default": {
        "KEY_ARNS": [os.environ["BENCH_KEY_ARN"]],
        "ENDPOINT_URL": _endpoint,
        "INDEX_KEY_ARN": os.environ.get("BENCH_INDEX_KEY_ARN"),
    },
    "uncached": {"KEY_ARNS": [os.environ["BENCH_KEY_ARN"]], "ENDPOINT_URL": _endpoint, "CACHE": None},
}
LOGGING = {"version": 1, "loggers": {"django_kms_fields": {"level": "WARNING"}}}
