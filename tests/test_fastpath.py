"""The fast path (django_kms_fields/fastpath.py) against the AWS Encryption SDK as the oracle.

- Differential: whatever the fast path writes the SDK reads back, whatever the SDK writes the fast
  path reads back, for generated plaintexts from empty to 1 MB; with the same data key and message
  id the two write the same bytes.
- Mutations: for a sample of messages, single-byte changes, truncations, appended bytes, swapped
  frames and swapped encryption-context pairs: the fast path returns a plaintext exactly when the SDK
  does, and through the public read every rejection is the same DecryptionError as with the fast
  path off. The count is deterministic and asserted (>= 20,000 per run); ``KMS_FIELDS_MUTATIONS=full``
  runs every byte value at every position instead of eight bit flips (over a million mutations).
- The fast path is taken for the app's messages, and what it does not handle reaches the SDK.

Most of the module uses a local raw AES wrapping key, so that a mutation inside a wrapped data key
costs a local AES-GCM failure rather than a KMS call; the tests through the app use the local KMS.
"""

import gc
import io
import os
import random

import aws_encryption_sdk
import pytest
from aws_encryption_sdk.exceptions import MasterKeyProviderError
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.data_keys import calculate_commitment_key, derive_data_encryption_key
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKey
from aws_encryption_sdk.materials_managers import DecryptionMaterials, EncryptionMaterials
from aws_encryption_sdk.materials_managers.base import CryptoMaterialsManager
from aws_encryption_sdk.materials_managers.default import DefaultCryptoMaterialsManager
from aws_encryption_sdk.streaming_client import StreamDecryptor, StreamEncryptor
from aws_encryption_sdk.structures import DataKey, EncryptedDataKey, MasterKeyInfo
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.db import connection

from django_kms_fields import conf, crypto, fastpath
from django_kms_fields.exceptions import DecryptionError
from tests.helpers import regions_of, sdk_message, stored
from tests.testapp.models import Patient

SEED = 20261203
SUITE = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
CONTEXT = {"kms-fields:field": "testapp.patient.ssn", "purpose": "tests", "a": "first pair"}
MAX_DATA_KEYS = 10
FULL = os.environ.get("KMS_FIELDS_MUTATIONS") == "full"


def raw_manager(key_id: bytes = b"local-wrapping-key") -> CryptoMaterialsManager:
    wrapping = WrappingKey(
        wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
        wrapping_key=random.Random(SEED).randbytes(32),
        wrapping_key_type=EncryptionKeyType.SYMMETRIC,
    )
    return DefaultCryptoMaterialsManager(RawMasterKey(provider_id="tests-raw", key_id=key_id, wrapping_key=wrapping))


MANAGER = raw_manager()
SDK = aws_encryption_sdk.EncryptionSDKClient(
    commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT, max_encrypted_data_keys=MAX_DATA_KEYS
)


def sdk_write(plaintext: bytes, manager: CryptoMaterialsManager = MANAGER, frame_length: int = 4096, algorithm=SUITE) -> bytes:
    return SDK.encrypt(source=plaintext, materials_manager=manager, encryption_context=CONTEXT,
                       algorithm=algorithm, frame_length=frame_length)[0]


def sdk_read(message: bytes, manager: CryptoMaterialsManager = MANAGER) -> bytes:
    """The SDK's answer, with the app's rule on bytes after the message (as crypto's SDK path)."""
    source = io.BytesIO(message)
    decryptor = SDK.stream(mode="d", source=source, materials_manager=manager)
    try:
        plaintext = decryptor.read()
    finally:
        io.IOBase.close(decryptor)
    if source.read(1):
        raise ValueError("bytes after the message")
    return plaintext


def fast_write(plaintext: bytes) -> bytes:
    return fastpath.write(plaintext, MANAGER, CONTEXT, MAX_DATA_KEYS)


def fast_read(message: bytes):
    return fastpath.read(message, MANAGER, MAX_DATA_KEYS)


def plaintexts() -> list[bytes]:
    rng = random.Random(SEED)
    sizes = [0, 1, 2, 31, 32, 4095, 4096, 4097, 8191, 8192, 8193, 3 * 4096 + 17, 1024 * 1024]
    sizes += [rng.randrange(0, 5 * 4096) for _ in range(40)]
    return [rng.randbytes(size) for size in sizes]


# --- differential ------------------------------------------------------------------------------------


def test_every_message_the_fast_path_writes_the_sdk_reads_and_the_reverse():
    for plaintext in plaintexts():
        written = fast_write(plaintext)
        assert sdk_read(written) == plaintext, len(plaintext)
        assert fast_read(written) == plaintext, len(plaintext)
        from_sdk = sdk_write(plaintext)
        assert fast_read(from_sdk) == plaintext, len(plaintext)
        assert len(written) == len(from_sdk)


class _FixedMaterials(CryptoMaterialsManager):
    def __init__(self, materials):
        self.materials = materials

    def get_encryption_materials(self, request):
        return self.materials

    def decrypt_materials(self, request):  # pragma: no cover - not asked
        raise AssertionError


@pytest.mark.parametrize("size", [0, 1, 32, 4096, 4097, 3 * 4096 + 17])
def test_with_the_same_data_key_and_message_id_both_write_the_same_bytes(monkeypatch, size):
    rng = random.Random(size)
    data_keys = {
        EncryptedDataKey(key_provider=MasterKeyInfo(provider_id="aws-kms", key_info=f"arn:key/{i}".encode()),
                         encrypted_data_key=rng.randbytes(150))
        for i in range(3)
    }
    materials = EncryptionMaterials(
        algorithm=SUITE,
        data_encryption_key=DataKey(key_provider=MasterKeyInfo(provider_id="aws-kms", key_info=b"arn:key/0"),
                                    data_key=rng.randbytes(32), encrypted_data_key=b"x"),
        encrypted_data_keys=data_keys,
        encryption_context=dict(CONTEXT),
    )
    message_id = rng.randbytes(32)
    monkeypatch.setattr(fastpath, "_new_message_id", lambda: message_id)
    monkeypatch.setattr(aws_encryption_sdk.internal.utils, "message_id", lambda size: message_id)
    plaintext = rng.randbytes(size)
    ours = fastpath.write(plaintext, _FixedMaterials(materials), CONTEXT, MAX_DATA_KEYS)
    theirs = sdk_write(plaintext, _FixedMaterials(materials))

    assert ours == theirs


def test_the_app_writes_what_the_sdk_reads_and_reads_what_the_sdk_writes(db, local_kms, keys):
    keyring = conf.get_keyring("default")
    binding = Patient._meta.get_field("ssn").field_binding()
    sdk_client, manager = crypto._sdk_objects(keyring)
    for plaintext in plaintexts()[::4]:
        message = crypto.encrypt(plaintext, keyring, binding)
        assert sdk_client.decrypt(source=message, materials_manager=manager)[0] == plaintext
        # Written by the official SDK with a KMS master key of its own, as the CLI or another service would.
        written_elsewhere = sdk_message(local_kms, keys.second, plaintext, crypto.encryption_context_for(keyring, binding))
        assert crypto.decrypt(written_elsewhere, keyring, binding) == plaintext


# --- mutations ---------------------------------------------------------------------------------------


def _frames(message: bytes) -> list[range]:
    """The byte ranges of each frame of a framed 4096-byte message."""
    position, frames = body_start(message), []
    while position < len(message):
        final = message[position : position + 4] == b"\xff\xff\xff\xff"
        start = position
        position += (4 if final else 0) + 4 + 12
        length = int.from_bytes(message[position : position + 4], "big") if final else 4096
        position += (4 if final else 0) + length + 16
        frames.append(range(start, position))
    return frames


def body_start(message: bytes) -> int:
    """Where the body starts (after the header authentication tag)."""
    header = fastpath._parsed_header(message, MAX_DATA_KEYS)
    return header.end + 16


def mutations(message: bytes, rng: random.Random):
    """Altered copies of ``message``, in a deterministic order for a given ``rng`` (see the module docstring)."""
    body = body_start(message)
    frames = _frames(message)
    frame_bytes = set()
    for frame in frames:  # every byte of each frame's own fields, a sample of its ciphertext
        frame_bytes.update(range(frame.start, frame.start + 24))
        frame_bytes.update(range(frame.stop - 20, frame.stop))
        frame_bytes.update(rng.sample(frame, min(len(frame), 48)))
    positions = sorted(set(range(body)) | frame_bytes) if not FULL else range(len(message))
    changes = range(1, 256) if FULL else [1 << bit for bit in range(8)]
    for position in positions:
        for change in changes:
            mutated = bytearray(message)
            mutated[position] ^= change
            yield bytes(mutated)
    cuts = set(range(body + 64)) | {f.start + d for f in frames for d in range(-2, 40)} | {f.stop - d for f in frames for d in range(40)}
    for length in sorted(cuts) if not FULL else range(len(message)):
        if 0 <= length < len(message):
            yield message[:length]
    for extra in (b"\x00", b"\xff" * 4, rng.randbytes(16), message[-40:], message[body:]):
        yield message + extra
    if len(frames) >= 3:
        first, second = frames[0], frames[1]
        yield message[: first.start] + message[second.start : second.stop] + message[first.start : first.stop] + message[second.stop :]
        yield message[: first.start] + message[second.start :]  # a frame dropped
        yield message[: second.stop] + message[first.start : first.stop] + message[second.stop :]  # one repeated
    if len(frames) >= 2:
        yield message[: frames[0].start] + message[frames[-1].start :]  # all but the final frame dropped
    yield from context_swaps(message)


def context_swaps(message: bytes):
    """The header with two encryption-context pairs swapped, or two values exchanged between keys."""
    pairs, position = [], 39
    count = int.from_bytes(message[37:39], "big")
    for _ in range(count):
        start = position
        for _part in range(2):
            position += 2 + int.from_bytes(message[position : position + 2], "big")
        pairs.append((start, position))
    spans = [message[s:e] for s, e in pairs]
    for i in range(len(spans)):
        for j in range(i + 1, len(spans)):
            swapped = list(spans)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            yield message[:39] + b"".join(swapped) + message[position:]
            keys = [s[: 2 + int.from_bytes(s[:2], "big")] for s in spans]
            values = [s[len(k):] for s, k in zip(spans, keys, strict=True)]
            exchanged = list(zip(keys, values, strict=True))
            exchanged[i], exchanged[j] = (keys[i], values[j]), (keys[j], values[i])
            yield message[:39] + b"".join(k + v for k, v in exchanged) + message[position:]


def _outcome_of_sdk(message: bytes):
    try:
        return sdk_read(message)
    except Exception as err:  # noqa: BLE001 - the oracle's refusal, of whatever kind
        return type(err)


def test_mutated_messages_are_refused_by_the_fast_path_exactly_when_the_sdk_refuses_them():
    rng = random.Random(SEED)
    samples = [fast_write(rng.randbytes(size)) for size in (0, 1, 32, 4096, 4097)] + [sdk_write(rng.randbytes(2 * 4096 + 5))]
    count, accepted = 0, 0
    for message in samples:
        for mutated in mutations(message, rng):
            if mutated == message:
                continue
            count += 1
            oracle = _outcome_of_sdk(mutated)
            try:
                ours = fast_read(mutated)
            except Exception as err:  # noqa: BLE001 - only the materials manager may raise, as for the SDK
                ours = type(err)
            if isinstance(oracle, bytes):
                accepted += 1
                assert ours == oracle
            else:
                assert not isinstance(ours, bytes), f"the fast path accepted what the SDK refuses ({oracle.__name__})"
    assert count >= (1_000_000 if FULL else 20_000), count
    assert accepted == 0  # every change to a message is caught by one of its tags or checks


def test_through_the_app_a_mutated_value_is_the_same_decryption_error_with_the_fast_path_on_or_off(db, monkeypatch):
    rng = random.Random(SEED + 1)
    field = Patient._meta.get_field("ssn")
    patient = Patient.objects.create(ssn="a value worth reading, 32 chars")
    message = stored(Patient, patient.pk, "ssn")
    field.from_db_value(message, None, connection)  # the data key is cached from here on
    edk = regions_of(message).data_keys
    sample = [m for m in mutations(message, rng) if m != message]
    # A mutation inside a wrapped data key costs a KMS call (~7 ms against the local KMS): a few of those.
    in_data_keys = [m for m in sample if len(m) == len(message) and any(m[i] != message[i] for i in edk)]
    sample = [m for m in sample if m not in in_data_keys][::8] + in_data_keys[::60]
    assert len(sample) >= 300
    for mutated in sample:
        answers = []
        for enabled in (True, False):
            monkeypatch.setattr(fastpath, "ENABLED", enabled)
            with pytest.raises(DecryptionError) as caught:
                field.from_db_value(mutated, None, connection)
            answers.append((type(caught.value), str(caught.value), caught.value.code))
        assert answers[0] == answers[1]


# --- the fast path is taken, and only where it should be ----------------------------------------------


def test_the_app_reads_and_writes_its_messages_on_the_fast_path(db, monkeypatch):
    """Fails if the fast path is silently not taken (a future SDK, a changed condition)."""

    def not_expected(*args, **kwargs):
        raise AssertionError("the SDK's stream machinery was used for a message the fast path handles")

    patient = Patient.objects.create(ssn="written once through the SDK's cache warm-up")
    monkeypatch.setattr(StreamEncryptor, "__init__", not_expected)
    monkeypatch.setattr(StreamDecryptor, "__init__", not_expected)

    patient = Patient.objects.create(ssn="on the fast path", notes="x" * 10_000)
    reloaded = Patient.objects.get(pk=patient.pk)
    assert (reloaded.ssn, reloaded.notes) == ("on the fast path", "x" * 10_000)


def test_what_the_driver_is_given_for_a_value_is_bytes_the_garbage_collector_does_not_track(db):
    """A memoryview (SQLite's Database.Binary) is two objects the collector tracks per value: on Python
    3.11, one more full collection in a bulk_create of 10,000 (docs/design.md, "What the driver is given")."""
    field = Patient._meta.get_field("ssn")
    new_value = field.get_db_prep_save("a value being written", connection)
    patient = Patient.objects.create(ssn="loaded and not read")
    loaded = Patient.objects.get(pk=patient.pk)
    written_back = field.get_db_prep_save(field.pre_save(loaded, add=False), connection)

    for prepared in (new_value, written_back):
        assert type(prepared) is bytes and prepared[:1] == b"\x02"
        assert not gc.is_tracked(prepared)
    assert written_back == stored(Patient, patient.pk, "ssn")


def test_what_the_fast_path_does_not_handle_reaches_the_sdk(db, settings, local_kms, keys, monkeypatch):
    keyring = conf.get_keyring("default")
    binding = Patient._meta.get_field("ssn").field_binding()
    context = crypto.encryption_context_for(keyring, binding)
    signed = sdk_message(local_kms, keys.first, b"signed", context, algorithm="AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384")
    sdk_reads = []
    real_read = StreamDecryptor.read

    def counting_read(self, *args):
        sdk_reads.append(self)
        return real_read(self, *args)

    monkeypatch.setattr(StreamDecryptor, "read", counting_read)
    assert isinstance(fastpath.read(signed, crypto._sdk_objects(keyring)[1], 10), fastpath.Declined)
    assert crypto.decrypt(signed, keyring, binding) == b"signed"
    assert len({id(decryptor) for decryptor in sdk_reads}) == 1

    # A keyring on the signing suite writes through the SDK.
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": {**settings.KMS_FIELDS["default"],
                                                               "ALGORITHM": "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384"}}
    written = crypto.encrypt(b"signed too", conf.get_keyring("default"), binding)
    assert written[1:3] == Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384.id_as_bytes()
    assert crypto.decrypt(written, conf.get_keyring("default"), binding) == b"signed too"
    assert len({id(decryptor) for decryptor in sdk_reads}) == 2


@pytest.mark.parametrize("enabled", [True, False])
def test_a_tampered_value_costs_the_same_kms_calls_with_the_fast_path_on_or_off(db, settings, local_kms, keys, kms_calls,
                                                                              monkeypatch, enabled):
    # Without a cache, where a second request for the data key would be a second KMS call: a message
    # the fast path declines after obtaining its data key is read by the SDK with that same key.
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": {**settings.KMS_FIELDS["default"], "CACHE": None}}
    monkeypatch.setattr(fastpath, "ENABLED", enabled)
    field = Patient._meta.get_field("ssn")
    patient = Patient.objects.create(ssn="tampered below")
    message = bytearray(stored(Patient, patient.pk, "ssn"))
    message[regions_of(bytes(message)).body.start + 5] ^= 1
    kms_calls.clear()

    with pytest.raises(DecryptionError, match=r"\(InvalidTag\)"):
        field.from_db_value(bytes(message), None, connection)
    assert [call["operation"] for call in kms_calls] == ["Decrypt"]


class _KnownDataKey(CryptoMaterialsManager):
    """Materials around a data key the test knows, as an attacker who holds one data key would."""

    def __init__(self, data_key: bytes):
        info = MasterKeyInfo(provider_id="tests-raw", key_info=b"known")
        self.key = DataKey(key_provider=info, data_key=data_key, encrypted_data_key=b"wrapped")
        self.edk = EncryptedDataKey(key_provider=info, encrypted_data_key=b"wrapped")
        self.edks = {self.edk}  # what messages carry

    def get_encryption_materials(self, request):
        return EncryptionMaterials(algorithm=SUITE, data_encryption_key=self.key, encrypted_data_keys=self.edks,
                                   encryption_context=dict(request.encryption_context))

    def decrypt_materials(self, request):
        return DecryptionMaterials(data_key=self.key)


def test_a_message_whose_tags_verify_but_whose_key_commitment_does_not_is_refused():
    # AES-GCM tags can be made to verify under a second key; only the commitment ties a message to
    # one data key. Here every tag is valid and the commitment alone is wrong.
    rng = random.Random(SEED + 2)
    manager = _KnownDataKey(rng.randbytes(32))
    message = fastpath.write(b"committed to one key", manager, CONTEXT, MAX_DATA_KEYS)
    header = fastpath._parsed_header(message, MAX_DATA_KEYS)
    forged_header = message[: header.end - 32] + rng.randbytes(32)
    derived, _commitment = fastpath._keys(manager.key.data_key, header.message_id)
    forged = forged_header + AESGCM(derived).encrypt(bytes(12), b"", forged_header) + message[header.end + 16 :]

    assert fastpath.read(message, manager, MAX_DATA_KEYS) == b"committed to one key"
    with pytest.raises(MasterKeyProviderError, match="Key commitment validation failed"):
        sdk_read(forged, manager)
    assert isinstance(fastpath.read(forged, manager, MAX_DATA_KEYS), fastpath.Declined)


def test_the_limit_on_wrapped_data_keys_holds_for_the_header_just_read_under_a_higher_one():
    # The fast path remembers the last header it parsed; a reader with a lower limit must still be
    # held to it, as the SDK holds it (MaxEncryptedDataKeysExceeded, before any KMS call).
    manager = _KnownDataKey(random.Random(SEED + 3).randbytes(32))
    manager.edks = {manager.edk, EncryptedDataKey(key_provider=manager.edk.key_provider, encrypted_data_key=b"again")}
    message = fastpath.write(b"under two wrapped keys", manager, CONTEXT, MAX_DATA_KEYS)

    assert fastpath.read(message, manager, 2) == b"under two wrapped keys"
    assert isinstance(fastpath.read(message, manager, 1), fastpath.Declined)


def test_every_message_written_has_its_own_message_id():
    # The message id salts the derived key: one id twice would mean the same key and frame nonces
    # for two plaintexts under a cached data key.
    messages = [fast_write(b"same plaintext") for _ in range(500)]

    assert len({message[3:35] for message in messages}) == 500


def test_without_hkdf_extract_the_keys_are_the_same(monkeypatch):
    # cryptography releases without HKDF.extract derive each key with HKDF(...).derive.
    data_key, message_id = random.Random(SEED).randbytes(32), random.Random(SEED + 1).randbytes(32)
    with_extract = fastpath._keys(data_key, message_id)
    monkeypatch.setattr(fastpath, "_EXTRACT", None)

    assert fastpath._keys(data_key, message_id) == with_extract
    assert with_extract[0] == derive_data_encryption_key(data_key, SUITE, message_id)
    assert with_extract[1] == calculate_commitment_key(data_key, SUITE, message_id)
