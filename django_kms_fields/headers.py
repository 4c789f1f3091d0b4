"""Reading a stored message's header without decrypting it and without a KMS call.

For operations tools (rotation, legacy plaintext): which keys wrap a value, and whether a stored value
is a message at all. The SDK's public API has no header-only reader, so this is the one module that
imports its internal ``deserialize_header`` (see docs/design.md, "What we rely on").
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError
from aws_encryption_sdk.identifiers import Algorithm, SerializationVersion
from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header

from .conf import ALGORITHMS, KeyringConfig
from .exceptions import DecryptionError
from .keys import KMS_PROVIDER_ID

__all__ = [
    "FRAME_LENGTH",
    "MALFORMED_HEADER_ERRORS",
    "MESSAGE_PREFIXES",
    "BodyShape",
    "body_shape",
    "looks_like_message",
    "is_current_message",
    "uses_algorithm",
    "wrapping_key_arns",
]

# What the SDK's header parser raises for bytes that are not a message header: its own errors, and
# from deeper in it struct, value, index and key errors. The hostile-value fuzz proves the list.
MALFORMED_HEADER_ERRORS: tuple[type[BaseException], ...] = (
    AWSEncryptionSDKClientError,
    struct.error,
    ValueError,
    IndexError,
    KeyError,
    OverflowError,
)
# For reading headers outside a decryption (rotation): any message this app could have written.
_MAX_HEADER_DATA_KEYS = 64


def _message_prefix(algorithm_name: str) -> bytes:
    # Message format version 2 begins with its version byte, then the suite's two-byte id.
    return bytes([SerializationVersion.V2.value]) + Algorithm[algorithm_name].algorithm_id.to_bytes(2, "big")


# What every message this app can write begins with: one prefix per suite it may be configured with.
MESSAGE_PREFIXES = frozenset(_message_prefix(name) for name in ALGORITHMS)
_PREFIX_LENGTH = 3


# The frame length this app writes (the SDK's and the AWS Encryption SDK CLI's default). A stored
# value with any other is refused before any KMS call or body work: one-byte frames make a value
# cost thousands of times more CPU to read than its size.
FRAME_LENGTH = 4096
_FRAMED_DATA = 2
_MESSAGE_ID_LENGTH = 32  # message format version 2


@dataclass(frozen=True)
class BodyShape:
    suite_id: int
    framed: bool
    frame_length: int


def body_shape(message: bytes) -> BodyShape | None:
    """The suite, content type and frame length of a version 2 message, read by walking its header's
    length fields (a few microseconds; the SDK's full header parse costs ~90). None when ``message``
    is not laid out like one, which the SDK then refuses on its own.
    """
    if len(message) < 3 + _MESSAGE_ID_LENGTH + 2 or message[0] != SerializationVersion.V2.value:
        return None
    suite_id = int.from_bytes(message[1:3], "big")
    offset = 3 + _MESSAGE_ID_LENGTH
    offset += 2 + int.from_bytes(message[offset : offset + 2], "big")  # the encryption context
    if offset + 2 > len(message):
        return None
    data_keys = int.from_bytes(message[offset : offset + 2], "big")
    offset += 2
    for _ in range(data_keys * 3):  # provider id, key info, wrapped key: each length-prefixed
        if offset + 2 > len(message):
            return None
        offset += 2 + int.from_bytes(message[offset : offset + 2], "big")
    if offset + 5 > len(message):
        return None
    return BodyShape(
        suite_id=suite_id,
        framed=message[offset] == _FRAMED_DATA,
        frame_length=int.from_bytes(message[offset + 1 : offset + 5], "big"),
    )


def looks_like_message(stored: bytes) -> bool:
    """Whether ``stored`` starts like a message this app writes (left-over plaintext does not)."""
    return bytes(stored[:_PREFIX_LENGTH]) in MESSAGE_PREFIXES


def is_current_message(stored: bytes, keyring: KeyringConfig) -> bool:
    """Whether ``stored`` is a message under the keyring's ``ALGORITHM`` wrapped by exactly its
    ``KEY_ARNS`` (header only, no KMS call)."""
    if not uses_algorithm(stored, keyring):
        return False
    try:
        return wrapping_key_arns(stored) == frozenset(keyring.key_arns)
    except DecryptionError:
        return False


def uses_algorithm(stored: bytes, keyring: KeyringConfig) -> bool:
    """Whether ``stored`` is laid out as a message under the keyring's ``ALGORITHM``."""
    shape = body_shape(stored)
    return shape is not None and shape.suite_id == Algorithm[keyring.algorithm].algorithm_id


def wrapping_key_arns(message: bytes) -> frozenset[str]:
    """The ARNs of the KMS keys that wrap the message's data key, read from its header alone.

    Raises ``DecryptionError`` when the header cannot be read. No KMS call is made.
    """
    try:
        header, _raw = deserialize_header(io.BytesIO(bytes(message)), _MAX_HEADER_DATA_KEYS)
    except MALFORMED_HEADER_ERRORS as err:
        raise DecryptionError(
            f"the stored value has no readable message header ({type(err).__name__}).", code=type(err).__name__
        ) from None
    return frozenset(
        edk.key_provider.key_info.decode("utf-8", errors="replace")
        for edk in header.encrypted_data_keys
        if edk.key_provider.provider_id == KMS_PROVIDER_ID
    )
