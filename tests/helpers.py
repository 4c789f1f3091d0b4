"""What more than one test module needs: keyring settings, raw column access, the message layout.

Test modules import from here and never from each other, so running or editing one module never
depends on another module's tests.
"""

import io
import os
import struct
import types
from dataclasses import dataclass

import attr
import aws_encryption_sdk
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy
from aws_encryption_sdk.internal.crypto.data_keys import derive_data_encryption_key
from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header
from aws_encryption_sdk.key_providers.kms import KMSMasterKey
from aws_encryption_sdk.materials_managers.base import CryptoMaterialsManager
from aws_encryption_sdk.materials_managers.default import DefaultCryptoMaterialsManager

from django.db import connection

# The region of every key the local KMS makes for the suite.
REGION = "eu-west-1"


def keyring(key_arns: list[str], endpoint: str, **options: object) -> dict[str, object]:
    """A keyring setting with test-sized bounds: a broken test fails in seconds, not minutes."""
    return {
        "KEY_ARNS": key_arns,
        "ENDPOINT_URL": endpoint,
        "CONNECT_TIMEOUT": 2,
        "READ_TIMEOUT": 5,
        "MAX_ATTEMPTS": 2,
        **options,
    }


def stored(model, pk, column):
    """The raw bytes in the column, read past the ORM."""
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {connection.ops.quote_name(column)} FROM {table} WHERE id = %s", [pk])
        value = cursor.fetchone()[0]
    return None if value is None else bytes(value)


def write_raw(model, pk, column, value):
    """Puts ``value`` in the column past the ORM, as a tampering user or an old plaintext column would."""
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {connection.ops.quote_name(column)} = %s WHERE id = %s",
            [None if value is None else connection.Database.Binary(value), pk],
        )


@dataclass(frozen=True)
class Regions:
    """Byte ranges of one AWS Encryption SDK v2 message, framed, non-signing."""

    version_and_suite: range
    message_id: range
    context: range
    data_keys: range
    content_type_and_frame: range
    commitment: range
    header_tag: range
    frame_header: range
    frame_iv: range
    body: range
    body_tag: range


def regions_of(message: bytes) -> Regions:
    position = 1 + 2 + 32
    (context_length,) = struct.unpack_from(">H", message, position)
    context = range(position, position + 2 + context_length)
    position = context.stop
    (key_count,) = struct.unpack_from(">H", message, position)
    start = position
    position += 2
    for _ in range(key_count):
        for _field in range(3):  # provider id, provider info, wrapped key
            (length,) = struct.unpack_from(">H", message, position)
            position += 2 + length
    data_keys = range(start, position)
    content_type_and_frame = range(position, position + 1 + 4)
    commitment = range(content_type_and_frame.stop, content_type_and_frame.stop + 32)
    header_tag = range(commitment.stop, commitment.stop + 16)
    frame_header = range(header_tag.stop, header_tag.stop + 8)  # end marker + sequence number
    frame_iv = range(frame_header.stop, frame_header.stop + 12)
    (content_length,) = struct.unpack_from(">I", message, frame_iv.stop)
    body = range(frame_iv.stop, frame_iv.stop + 4 + content_length)
    body_tag = range(body.stop, body.stop + 16)
    assert body_tag.stop == len(message), "the test's idea of the format is off"
    return Regions(range(0, 3), range(3, 35), context, data_keys, content_type_and_frame, commitment, header_tag,
                   frame_header, frame_iv, body, body_tag)


# --- secrets reachable from an exception --------------------------------------------------------------

_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.CodeType)
_TESTS_DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def message_secrets(message: bytes, local_kms, plaintext: bytes) -> list[bytes]:
    """The plaintext, the data key and the encryption key derived from it for one stored message.

    The data key is asked of the local KMS directly (a test may; the app's code is not involved).
    """
    header, _raw = deserialize_header(io.BytesIO(message), 64)
    context = {k: v for k, v in header.encryption_context.items() if not k.startswith("aws-crypto-")}
    edk = next(iter(header.encrypted_data_keys))
    data_key = local_kms.admin().decrypt(
        CiphertextBlob=edk.encrypted_data_key, EncryptionContext=context,
        KeyId=edk.key_provider.key_info.decode(),
    )["Plaintext"]
    derived = derive_data_encryption_key(data_key, header.algorithm, header.message_id)
    # (The commitment value derived from the data key is stored in every header: no secret.)
    return [plaintext, data_key, derived]


def secrets_reachable_from(error: BaseException, secrets: list[bytes]) -> list[str]:
    """Where a secret is held by a local variable of a frame that ``error`` reaches through its
    traceback, ``__cause__`` or ``__context__`` (as a debug page or an error tracker would show it),
    up to a few attributes deep. The test's own frames are left out."""
    found: list[str] = []
    seen_errors: set[int] = set()
    pending = [error]
    while pending:
        exc = pending.pop()
        if id(exc) in seen_errors:
            continue
        seen_errors.add(id(exc))
        pending += [linked for linked in (exc.__cause__, exc.__context__) if linked is not None]
        tb = exc.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if not frame.f_code.co_filename.startswith(_TESTS_DIRECTORY):
                for name, value in frame.f_locals.items():
                    if _holds_secret(value, secrets, depth=4, seen=set()):
                        found.append(f"{type(exc).__name__}: {frame.f_code.co_name} ({frame.f_code.co_filename}) local {name}")
            tb = tb.tb_next
    return found


def _holds_secret(value, secrets, depth, seen) -> bool:
    if id(value) in seen or isinstance(value, _OPAQUE):
        return False
    seen.add(id(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return any(secret in bytes(value) for secret in secrets)
    if isinstance(value, str):
        return any(secret.decode("utf-8", "ignore") in value for secret in secrets if len(secret) >= 8)
    if depth == 0:
        return False
    if isinstance(value, dict):
        children = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        children = list(value)
    else:
        children = list(getattr(value, "__dict__", {}).values())
        children += [getattr(value, slot, None) for slot in getattr(type(value), "__slots__", ())]
    return any(_holds_secret(child, secrets, depth - 1, seen) for child in children)


def sdk_message(local_kms, key_arn: str, plaintext: bytes, context: dict[str, str], *, frame_length: int = 4096,
                algorithm: str = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY", extra_reserved: dict[str, str] | None = None) -> bytes:
    """A message written by the official SDK, as anyone with kms:GenerateDataKey on the key could write it.

    ``extra_reserved`` adds ``aws-crypto-*`` pairs to the header, through a materials manager of the
    writer's own (the SDK refuses them as encryption context).
    """
    master_key = KMSMasterKey(key_id=key_arn, client=local_kms.admin(key_arn.split(":")[3]))
    manager = DefaultCryptoMaterialsManager(master_key_provider=master_key)
    if extra_reserved:
        manager = _AddingReservedPairs(manager, extra_reserved)
    sdk = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    message, _header = sdk.encrypt(
        source=plaintext, materials_manager=manager, encryption_context=context,
        algorithm=Algorithm[algorithm], frame_length=frame_length,
    )
    return message


class _AddingReservedPairs(CryptoMaterialsManager):
    def __init__(self, inner, pairs):
        self._inner, self._pairs = inner, pairs

    def get_encryption_materials(self, request):
        materials = self._inner.get_encryption_materials(request)
        return attr.evolve(materials, encryption_context={**materials.encryption_context, **self._pairs})

    def decrypt_materials(self, request):
        return self._inner.decrypt_materials(request)
