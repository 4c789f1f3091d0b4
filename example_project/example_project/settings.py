"""Settings of the example clinic.

The keys and the KMS endpoint come from the environment, so the same project runs against the local
moto server that scripts/example.sh starts, or against real AWS:

    KMS_FIELDS_KEY_ARN=arn:aws:kms:eu-west-1:111122223333:key/...     (required)
    KMS_FIELDS_ARCHIVE_KEY_ARN=arn:aws:kms:eu-west-1:111122223333:key/...  (defaults to the same key)
    KMS_FIELDS_INDEX_KEY_ARN=arn:aws:kms:eu-west-1:111122223333:key/...  (an HMAC_256 key, for ssn lookups)
    KMS_FIELDS_ENDPOINT_URL=http://127.0.0.1:PORT   (leave unset for AWS itself)
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "example_project.urls"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_kms_fields",
    "clinic",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DATABASE", BASE_DIR / "db.sqlite3"),
    }
}

_key_arn = os.environ.get("KMS_FIELDS_KEY_ARN", "")
_endpoint = os.environ.get("KMS_FIELDS_ENDPOINT_URL") or None
KMS_FIELDS = {
    "default": {
        "KEY_ARNS": [_key_arn],
        "ENDPOINT_URL": _endpoint,
        "CONNECT_TIMEOUT": 2,
        "READ_TIMEOUT": 4,
        "MAX_ATTEMPTS": 3,
        "RETRY_MODE": "standard",
        "ENCRYPTION_CONTEXT": {"app": "clinic"},
        "INDEX_KEY_ARN": os.environ.get("KMS_FIELDS_INDEX_KEY_ARN") or None,
    },
    "archive": {
        "KEY_ARNS": [os.environ.get("KMS_FIELDS_ARCHIVE_KEY_ARN") or _key_arn],
        "ENDPOINT_URL": _endpoint,
    },
}

# botocore at DEBUG would log KMS response bodies, data keys included (check kms_fields.W001).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "botocore": {"level": "WARNING"},
        "django_kms_fields": {"handlers": ["console"], "level": os.environ.get("KMS_FIELDS_LOG_LEVEL", "WARNING")},
    },
}
