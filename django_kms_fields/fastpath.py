"""The messages this app writes, written and read without the SDK's stream machinery.

One shape only: message format version 2, the committing non-signing suite
(``AES_256_GCM_HKDF_SHA512_COMMIT_KEY``), framed content in 4096-byte frames. The data keys come from
the caller's materials manager (the same caching CMM the SDK would be given, asked with the same
requests, or for our caching manager the same requests' parts, so the data-key cache counts messages
and KMS calls exactly as with the SDK); HKDF and AES-GCM come from ``cryptography``. What this
module writes is byte for byte what the SDK writes for the same data key and message id, and it reads
what the SDK writes.

Reading verifies, before any plaintext leaves this module, what the SDK verifies: the key commitment
(constant-time compare), the header authentication tag, each frame's tag, that sequence numbers run
1, 2, 3..., that the last frame is a final frame, and that nothing follows it; the field binding is the
materials manager's. Anything it does not fully recognise, and any check that fails, is *declined*:
the caller hands the message to the SDK, which decides and reports in its own words (a declined
message costs no second KMS call: ``Declined.materials_manager`` answers with the materials already
obtained). So the fast path can only accept what the SDK accepts, and every error is the SDK's.

See docs/design.md, "The fast path".
"""

from __future__ import annotations

import hmac
import io
import os
import weakref
from dataclasses import dataclass
from typing import NamedTuple

from aws_encryption_sdk.exceptions import ActionNotAllowedError, MaxEncryptedDataKeysExceeded, SerializationError
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy
from aws_encryption_sdk.internal.utils.streams import ROStream
from aws_encryption_sdk.materials_managers import (
    DecryptionMaterials,
    DecryptionMaterialsRequest,
    EncryptionMaterials,
    EncryptionMaterialsRequest,
)
from aws_encryption_sdk.materials_managers.base import CryptoMaterialsManager
from aws_encryption_sdk.structures import EncryptedDataKey, MasterKeyInfo
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from .caching import RememberingCachingMaterialsManager

__all__ = ["SUITE", "ENABLED", "Declined", "handles_suite", "write", "read"]

# The switch the benchmark's "fast path off" column and the differential tests use. Not a setting:
# see docs/design.md, "The fast path".
ENABLED = True

SUITE = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
COMMITMENT_POLICY = CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
FRAME_LENGTH = 4096

_PREFIX = bytes([0x02]) + SUITE.algorithm_id.to_bytes(2, "big")  # format version 2, then the suite
_MESSAGE_ID_LENGTH = 32
_KEY_LENGTH = 32
_IV_LENGTH = 12
_TAG_LENGTH = 16
_FRAMED_CONTENT = 2
_CONTENT_AND_FRAME = bytes([_FRAMED_CONTENT]) + FRAME_LENGTH.to_bytes(4, "big")
_HEADER_IV = bytes(_IV_LENGTH)
_FINAL_FRAME_MARKER = b"\xff\xff\xff\xff"
_MAX_FRAME_COUNT = 0xFFFFFFFF  # the SDK's MAX_FRAME_COUNT
_FRAME_AAD = b"AWSKMSEncryptionClient Frame"
_FINAL_FRAME_AAD = b"AWSKMSEncryptionClient Final Frame"
# The HKDF info strings of the committing suites (the SDK's data_keys.py).
_DERIVE_INFO = SUITE.algorithm_id.to_bytes(2, "big") + b"DERIVEKEY"
_COMMIT_INFO = b"COMMITKEY"
_SHA512 = hashes.SHA512()
# HKDF's extract step on its own, where this cryptography release has it; HKDF(...).derive twice otherwise.
_EXTRACT = getattr(HKDF, "extract", None)
# Remembered header parts, keyed by their bytes, emptied at this size (hostile values can add entries).
_MEMO_SIZE = 512


def handles_suite(algorithm_name: str) -> bool:
    """Whether messages under the named suite are written here (the signing suite is the SDK's)."""
    return Algorithm[algorithm_name] is SUITE


def _keys(data_key: bytes, message_id: bytes) -> tuple[bytes, bytes]:
    """The message's encryption key and its key commitment: HKDF-SHA512 of the data key salted with
    the message id, with the suite's two info strings. Both share HKDF's extract step, so it runs once."""
    if _EXTRACT is None:
        derived = HKDF(algorithm=_SHA512, length=_KEY_LENGTH, salt=message_id, info=_DERIVE_INFO).derive(data_key)
        commitment = HKDF(algorithm=_SHA512, length=_KEY_LENGTH, salt=message_id, info=_COMMIT_INFO).derive(data_key)
        return derived, commitment
    pseudorandom_key = _EXTRACT(_SHA512, message_id, data_key)
    return (
        HKDFExpand(algorithm=_SHA512, length=_KEY_LENGTH, info=_DERIVE_INFO).derive(pseudorandom_key),
        HKDFExpand(algorithm=_SHA512, length=_KEY_LENGTH, info=_COMMIT_INFO).derive(pseudorandom_key),
    )


def _new_message_id() -> bytes:
    return os.urandom(_MESSAGE_ID_LENGTH)  # what the SDK's aws_encryption_sdk.internal.utils.message_id does


def _frame_iv(sequence_number: int) -> bytes:
    if sequence_number < len(_FIRST_FRAME_IVS):
        return _FIRST_FRAME_IVS[sequence_number]
    return bytes(_IV_LENGTH - 4) + sequence_number.to_bytes(4, "big")


# The IV of a frame is its sequence number (the SDK's frame_iv); the first ones, made once.
_FIRST_FRAME_IVS = tuple(bytes(_IV_LENGTH - 4) + number.to_bytes(4, "big") for number in range(64))


# How a message of less than a frame continues after its header: its one frame, final, numbered 1.
_ONLY_FRAME_START = _FINAL_FRAME_MARKER + (1).to_bytes(4, "big") + _frame_iv(1)
_ONLY_FRAME_IV = _frame_iv(1)
# Its additional data less the message id before and the length's last 4 bytes after.
_ONLY_FRAME_AAD_MIDDLE = _FINAL_FRAME_AAD + (1).to_bytes(4, "big") + bytes(4)


def _frame_aad(message_id: bytes, final: bool, sequence_number: int, length: int) -> bytes:
    return b"".join(
        (message_id, _FINAL_FRAME_AAD if final else _FRAME_AAD, sequence_number.to_bytes(4, "big"), length.to_bytes(8, "big"))
    )


def _length_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _serialized_context(context: dict[str, str]) -> bytes:
    """The encryption context as the SDK serializes it: pairs sorted by key bytes; nothing when empty."""
    if not context:
        return b""
    pairs = sorted((key.encode("utf-8"), value.encode("utf-8")) for key, value in context.items())
    return len(pairs).to_bytes(2, "big") + b"".join(_length_prefixed(key) + _length_prefixed(value) for key, value in pairs)


# --- writing ------------------------------------------------------------------------------------------


# id(materials) -> (a weak reference to them, their serialized context and wrapped data keys). Every
# message under one cached data key has the same; the weak reference keeps no data key alive.
_written_parts: dict[int, tuple[weakref.ref, bytes]] = {}


def _context_and_data_keys(materials: EncryptionMaterials) -> bytes:
    remembered = _written_parts.get(id(materials))
    if remembered is not None and remembered[0]() is materials:
        return remembered[1]
    data_keys = materials.encrypted_data_keys
    parts = b"".join(
        (
            _length_prefixed(_serialized_context(materials.encryption_context)),
            len(data_keys).to_bytes(2, "big"),
            # In the set's order, as the SDK's serializer walks it.
            *(
                _length_prefixed(edk.key_provider.provider_id.encode("utf-8"))
                + _length_prefixed(edk.key_provider.key_info)
                + _length_prefixed(edk.encrypted_data_key)
                for edk in data_keys
            ),
        )
    )
    if len(_written_parts) >= _MEMO_SIZE:
        _written_parts.clear()
    _written_parts[id(materials)] = (weakref.ref(materials), parts)
    return parts


def write(
    plaintext: bytes, manager: CryptoMaterialsManager, encryption_context: dict[str, str], max_encrypted_data_keys: int
) -> bytes:
    """One message holding ``plaintext``, with a data key from ``manager``.

    The request is the one the SDK's ``StreamEncryptor`` makes for a source of known length (our
    caching manager takes its parts instead, and builds it only when its backing manager is asked), so
    a caching manager counts this message and its bytes against its cache entry exactly as it would
    for the SDK. Raises what the manager raises, and the SDK's own errors where the SDK would.
    """
    if type(manager) is RememberingCachingMaterialsManager:
        # The same steps as get_encryption_materials for the request below, without building it while
        # the cache answers (about a tenth of a write's cost).
        materials = manager.encryption_materials_for_length(
            encryption_context, len(plaintext), SUITE, FRAME_LENGTH, COMMITMENT_POLICY
        )
    else:
        request = EncryptionMaterialsRequest(
            algorithm=SUITE,
            encryption_context=dict(encryption_context),
            frame_length=FRAME_LENGTH,
            plaintext_rostream=ROStream(io.BytesIO(plaintext)),
            plaintext_length=len(plaintext),
            commitment_policy=COMMITMENT_POLICY,
        )
        materials = manager.get_encryption_materials(request=request)
    if type(materials) is not EncryptionMaterials or materials.algorithm is not SUITE or materials.signing_key is not None:
        raise ActionNotAllowedError("Cryptographic materials manager provided algorithm suite differs from algorithm suite in request.")
    if len(materials.encrypted_data_keys) > max_encrypted_data_keys:
        raise MaxEncryptedDataKeysExceeded(len(materials.encrypted_data_keys), max_encrypted_data_keys)
    if len(plaintext) // FRAME_LENGTH + 1 > _MAX_FRAME_COUNT:
        raise SerializationError("Max frame count exceeded")

    # A fresh random message id per message, as the SDK's: the derived key, and so every (key, nonce)
    # pair of the frames, is never used for another message.
    message_id = _new_message_id()
    derived, commitment = _keys(materials.data_encryption_key.data_key, message_id)
    header = b"".join((_PREFIX, message_id, _context_and_data_keys(materials), _CONTENT_AND_FRAME, commitment))
    cipher = AESGCM(derived)
    parts = [header, cipher.encrypt(_HEADER_IV, b"", header)]
    # Full frames, then a final frame of what is left (empty when the length is a multiple of the frame).
    full_frames = len(plaintext) // FRAME_LENGTH
    for index in range(full_frames):
        sequence_number = index + 1
        iv = _frame_iv(sequence_number)
        chunk = plaintext[index * FRAME_LENGTH : (index + 1) * FRAME_LENGTH]
        parts += (sequence_number.to_bytes(4, "big"), iv)
        parts.append(cipher.encrypt(iv, chunk, _frame_aad(message_id, False, sequence_number, FRAME_LENGTH)))
    sequence_number = full_frames + 1
    iv = _frame_iv(sequence_number)
    rest = plaintext[full_frames * FRAME_LENGTH :]
    parts += (_FINAL_FRAME_MARKER, sequence_number.to_bytes(4, "big"), iv, len(rest).to_bytes(4, "big"))
    parts.append(cipher.encrypt(iv, rest, _frame_aad(message_id, True, sequence_number, len(rest))))
    return b"".join(parts)


# --- reading ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Declined:
    """The fast path did not read the message: the SDK must, through ``materials_manager``."""

    materials_manager: CryptoMaterialsManager


class _ObtainedMaterials(CryptoMaterialsManager):
    """Answers the SDK's request for the materials the fast path already obtained with them, so a
    declined message costs no second KMS call; any other request goes to the manager underneath."""

    def __init__(self, inner: CryptoMaterialsManager, request: DecryptionMaterialsRequest, materials: object) -> None:
        self._inner, self._request, self._materials = inner, request, materials

    def get_encryption_materials(self, request):  # type: ignore[no-untyped-def]
        return self._inner.get_encryption_materials(request)

    def decrypt_materials(self, request):  # type: ignore[no-untyped-def]
        if request == self._request:
            return self._materials
        return self._inner.decrypt_materials(request)


class _Header(NamedTuple):
    message_id: bytes
    request: DecryptionMaterialsRequest
    commitment: bytes
    end: int  # where the header authentication tag starts


# The materials request of a header's encryption context and wrapped data keys, keyed by their bytes:
# the values of one column share a few data keys, so most reads skip parsing them.
_requests: dict[bytes, DecryptionMaterialsRequest] = {}


# The last header region read, its number of wrapped data keys and its request. The values of a
# column read one after another mostly share their region; a message whose bytes from offset 35 start
# with it walks to the same end (the walk only reads lengths inside it), so one comparison replaces
# the walk. One tuple, replaced whole: a thread that reads another's is at worst told to walk.
_last_region: tuple[bytes, int, DecryptionMaterialsRequest] | None = None


def _parsed_header(message: bytes, max_encrypted_data_keys: int) -> _Header | None:
    """The header, when it is exactly as this app (or the SDK) writes it; otherwise None."""
    global _last_region
    size = len(message)
    if message[:3] != _PREFIX or size < 39:
        return None
    last = _last_region
    if last is not None and last[1] <= max_encrypted_data_keys and message.startswith(last[0], 35):
        position = 35 + len(last[0])
        request = last[2]
    else:
        # Walk the length fields to where the wrapped data keys end.
        position = 37 + int.from_bytes(message[35:37], "big")
        if position + 2 > size:
            return None
        key_count = int.from_bytes(message[position : position + 2], "big")
        if not 0 < key_count <= max_encrypted_data_keys:
            return None
        position += 2
        for _ in range(key_count * 3):  # provider id, key info, wrapped data key: each length-prefixed
            if position + 2 > size:
                return None
            position += 2 + int.from_bytes(message[position : position + 2], "big")
        if position > size:
            return None
        region = message[35:position]
        request = _requests.get(region)
        if request is None:
            request = _request_for(region)
            if request is None:
                return None
            if len(_requests) >= _MEMO_SIZE:
                _requests.clear()
            _requests[region] = request
        _last_region = (region, key_count, request)
    if message[position : position + 5] != _CONTENT_AND_FRAME:
        return None
    end = position + 5 + _KEY_LENGTH
    if end + _TAG_LENGTH > size:
        return None
    return _Header(message[3:35], request, message[position + 5 : end], end)


def _request_for(region: bytes) -> DecryptionMaterialsRequest | None:
    """The materials request the SDK makes for a header whose context and wrapped data keys are
    ``region``, when they are serialized exactly as the SDK serializes them; otherwise None."""
    context_end = 2 + int.from_bytes(region[:2], "big")
    context = _parsed_context(region[2:context_end])
    if context is None:
        return None
    data_keys = set()
    position = context_end + 2
    for _ in range(int.from_bytes(region[context_end:position], "big")):
        fields = []
        for _field in range(3):  # provider id, key info, wrapped data key
            end = position + 2 + int.from_bytes(region[position : position + 2], "big")
            fields.append(region[position + 2 : end])
            position = end
        try:
            provider_id = fields[0].decode("utf-8")
        except UnicodeDecodeError:
            return None
        data_keys.add(
            EncryptedDataKey(
                key_provider=MasterKeyInfo(provider_id=provider_id, key_info=fields[1]), encrypted_data_key=fields[2]
            )
        )
    return DecryptionMaterialsRequest(
        encrypted_data_keys=data_keys, algorithm=SUITE, encryption_context=context, commitment_policy=COMMITMENT_POLICY
    )


def _parsed_context(serialized: bytes) -> dict[str, str] | None:
    """The encryption context, when serialized as the SDK serializes it (keys sorted, no duplicates,
    UTF-8, nothing left over); otherwise None."""
    if not serialized:
        return {}
    size = len(serialized)
    if size < 2:
        return None
    count = int.from_bytes(serialized[:2], "big")
    if count == 0:
        return None
    position = 2
    context = {}
    previous = None
    for _ in range(count):
        items = []
        for _part in range(2):
            if position + 2 > size:
                return None
            end = position + 2 + int.from_bytes(serialized[position : position + 2], "big")
            if end > size:
                return None
            items.append(serialized[position + 2 : end])
            position = end
        key, value = items
        if previous is not None and key <= previous:
            return None
        previous = key
        try:
            context[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if position != size:
        return None
    return context


def read(message: bytes, manager: CryptoMaterialsManager, max_encrypted_data_keys: int) -> bytes | Declined:
    """The plaintext of ``message``, or ``Declined`` when the SDK must read it.

    Raises only what ``manager.decrypt_materials`` raises, for the very request the SDK would make.
    """
    header = _parsed_header(message, max_encrypted_data_keys)
    if header is None:
        return Declined(manager)
    request = header.request
    materials = manager.decrypt_materials(request=request)
    # Exactly the SDK's own materials class: a verification key or the MPL's required context keys
    # (another class) would need checks the fast path does not make.
    if type(materials) is not DecryptionMaterials or materials.verification_key is not None:
        return Declined(_ObtainedMaterials(manager, request, materials))
    derived, commitment = _keys(materials.data_key.data_key, header.message_id)
    if not hmac.compare_digest(commitment, header.commitment):
        return Declined(_ObtainedMaterials(manager, request, materials))
    cipher = AESGCM(derived)
    position = header.end
    try:
        cipher.decrypt(_HEADER_IV, message[position : position + _TAG_LENGTH], message[:position])
    except InvalidTag:
        return Declined(_ObtainedMaterials(manager, request, materials))
    plaintext = _read_frames(message, position + _TAG_LENGTH, header.message_id, cipher)
    if plaintext is None:
        return Declined(_ObtainedMaterials(manager, request, materials))
    return plaintext


def _read_frames(message: bytes, position: int, message_id: bytes, cipher: AESGCM) -> bytes | None:
    size = len(message)
    # Most values are shorter than a frame: their one frame is checked here in one go, by the same
    # rules as the loop below (which reads every other shape, and declines what this does not accept).
    if message.startswith(_ONLY_FRAME_START, position):
        length_field = message[position + 20 : position + 24]
        length = int.from_bytes(length_field, "big")
        end = position + 24 + length + _TAG_LENGTH
        if length <= FRAME_LENGTH and end == size:
            # _frame_aad(message_id, True, 1, length) without its integer conversions: the 8-byte length
            # is 4 zero bytes and the 4-byte field, as a frame never exceeds 2**32 bytes.
            aad = b"".join((message_id, _ONLY_FRAME_AAD_MIDDLE, length_field))
            try:
                return cipher.decrypt(_ONLY_FRAME_IV, message[position + 24 : end], aad)
            except InvalidTag:
                return None
    chunks = []
    sequence_number = 0
    while True:
        sequence_number += 1
        final = message[position : position + 4] == _FINAL_FRAME_MARKER
        if final:
            position += 4
        if position + 4 + _IV_LENGTH > size or int.from_bytes(message[position : position + 4], "big") != sequence_number:
            break
        iv = message[position + 4 : position + 4 + _IV_LENGTH]
        position += 4 + _IV_LENGTH
        if iv != _frame_iv(sequence_number):
            break
        if final:
            if position + 4 > size:
                break
            length = int.from_bytes(message[position : position + 4], "big")
            position += 4
            if length > FRAME_LENGTH:
                break
        else:
            length = FRAME_LENGTH
        end = position + length + _TAG_LENGTH
        if end > size:
            break
        try:
            chunks.append(cipher.decrypt(iv, message[position:end], _frame_aad(message_id, final, sequence_number, length)))
        except InvalidTag:
            break
        position = end
        if final:
            if position != size:
                break  # bytes after the message: the SDK path refuses them in our words
            return b"".join(chunks)
    chunks.clear()  # nothing read from a message that fails a check is released
    return None
