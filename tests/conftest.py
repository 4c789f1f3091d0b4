import os

# Before anything imports boto3: the tests never read the developer's own AWS configuration.
for _name in [name for name in os.environ if name.startswith(("AWS_", "BOTO_"))]:
    del os.environ[_name]
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_CONFIG_FILE="/nonexistent/aws/config",
    AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws/credentials",
    AWS_EC2_METADATA_DISABLED="true",
)

from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import pytest  # noqa: E402

from django_kms_fields.signals import kms_call  # noqa: E402

from .helpers import REGION, keyring  # noqa: E402
from .kms import KMSFront, LocalKMS  # noqa: E402



# Fixtures through which a test reaches a database; a test without them (or the django_db mark) cannot.
_DATABASE_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback", "live_server"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With KMS_FIELDS_TEST_DATABASE_FREE_DONE set (scripts/test.sh sets it after the first database of
    each Django line), tests that never touch a database are left out: they already ran on this line,
    and running them on every database only repeats the same thing."""
    if not os.environ.get("KMS_FIELDS_TEST_DATABASE_FREE_DONE"):
        return
    kept, left_out = [], []
    for item in items:
        uses_database = item.get_closest_marker("django_db") is not None or bool(
            _DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
        )
        (kept if uses_database else left_out).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


@dataclass(frozen=True)
class Keys:
    first: str
    second: str
    archive: str
    stranger: str  # a real key of the same KMS that no keyring lists
    index: str  # the HMAC key of the default keyring's blind indexes
    next_index: str  # another HMAC key, to rotate to


@pytest.fixture(scope="session")
def local_kms() -> Iterator[LocalKMS]:
    server = LocalKMS().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keys(local_kms: LocalKMS) -> Keys:
    return Keys(
        first=local_kms.create_key(REGION, "default, first"),
        second=local_kms.create_key(REGION, "default, second"),
        archive=local_kms.create_key(REGION, "archive"),
        stranger=local_kms.create_key(REGION, "in no keyring"),
        index=local_kms.create_hmac_key(REGION, "blind index"),
        next_index=local_kms.create_hmac_key(REGION, "blind index, rotated to"),
    )


@pytest.fixture(autouse=True)
def kms_settings(settings, local_kms: LocalKMS, keys: Keys) -> dict[str, object]:
    settings.KMS_FIELDS = {
        "default": keyring([keys.first, keys.second], local_kms.endpoint, INDEX_KEY_ARN=keys.index),
        "archive": keyring([keys.archive], local_kms.endpoint, ENCRYPTION_CONTEXT={"purpose": "archive"}),
    }
    return settings.KMS_FIELDS


@pytest.fixture
def front(local_kms: LocalKMS) -> Iterator[KMSFront]:
    kms_front = KMSFront(local_kms, hold_seconds=20).start()
    yield kms_front
    kms_front.stop()


@pytest.fixture
def kms_calls() -> Iterator[list[dict[str, object]]]:
    """Every KMS operation the app makes during the test, as the ``kms_call`` signal reports it."""
    calls: list[dict[str, object]] = []

    def record(sender: str, **kwargs: object) -> None:
        calls.append({"keyring": sender, **{k: v for k, v in kwargs.items() if k != "signal"}})

    kms_call.connect(record, weak=False, dispatch_uid="tests.kms_calls")
    yield calls
    kms_call.disconnect(dispatch_uid="tests.kms_calls")
