"""Settings for the test suite. ``KMS_FIELDS_TEST_DATABASE`` picks the backend: sqlite (default),
postgresql or mariadb, each on 127.0.0.1. ``KMS_FIELDS`` is filled in by ``tests/conftest.py`` once the
local KMS endpoint is up and its keys exist."""

import os
import tempfile

SECRET_KEY = "django-kms-fields-tests"
DEBUG = False
USE_TZ = True
# The admin tests log a user in; the default hasher's 1,000,000 PBKDF2 rounds cost 0.4 s a user.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "tests.testapp.urls"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_kms_fields",
    "tests.testapp",
]

MIDDLEWARE = [
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

# One test database per run, so two runs on one machine (a developer's and CI's) never collide.
_TEST_DATABASE_NAME = f"test_django_kms_fields_{os.getpid()}"
_DATABASES = {
    # A file, not :memory:, so threads in one test wait for SQLite's lock instead of failing on it.
    "sqlite": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(tempfile.gettempdir(), "django_kms_fields.sqlite3"),
        "TEST": {"NAME": os.path.join(tempfile.gettempdir(), _TEST_DATABASE_NAME + ".sqlite3")},
        # Threads in one test wait this long for SQLite's write lock (the default 5 s was seen to run
        # out on a busy machine).
        "OPTIONS": {"timeout": 30},
    },
    "postgresql": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test",
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "TEST": {"NAME": _TEST_DATABASE_NAME},
    },
    "mariadb": {
        "ENGINE": "django.db.backends.mysql",
        "NAME": "test",
        "USER": os.environ.get("MYSQL_USER", "root"),
        "PASSWORD": os.environ.get("MYSQL_PASSWORD", ""),
        "HOST": "127.0.0.1",
        "PORT": "3306",
        "OPTIONS": {"charset": "utf8mb4"},
        "TEST": {"NAME": _TEST_DATABASE_NAME, "CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
    },
}
DATABASE_VENDOR = os.environ.get("KMS_FIELDS_TEST_DATABASE", "sqlite")
if DATABASE_VENDOR not in _DATABASES:
    raise RuntimeError(f"KMS_FIELDS_TEST_DATABASE must be one of {', '.join(_DATABASES)}, not {DATABASE_VENDOR!r}")
DATABASES = {
    "default": _DATABASES[DATABASE_VENDOR],
    # A second database of the same kind, for what must happen on the database it is told to use.
    "other": {
        **_DATABASES[DATABASE_VENDOR],
        "NAME": _DATABASES[DATABASE_VENDOR]["NAME"] + ("" if DATABASE_VENDOR != "sqlite" else ".other"),
        "TEST": {
            **_DATABASES[DATABASE_VENDOR]["TEST"],
            "NAME": _DATABASES[DATABASE_VENDOR]["TEST"]["NAME"].replace(_TEST_DATABASE_NAME, _TEST_DATABASE_NAME + "_other"),
        },
    },
}

# Replaced by tests/conftest.py with keys of the local KMS endpoint before any test runs.
KMS_FIELDS = {
    "default": {"KEY_ARNS": ["arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"]},
    "archive": {"KEY_ARNS": ["arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000001"]},
}
