"""The SDK master keys of a keyring: every KMS key of it, each on the keyring's client for its region.

- Each key is the SDK's ``MRKAwareKMSMasterKey`` built around the shared KMS client that ``clients``
  made from the keyring's settings, so timeouts, attempts and endpoint are ours, and a replica of a
  listed multi-Region key is matched by the SDK (``owns_data_key``, ``_validate_allowed_to_decrypt``).
- One provider holds every key of the keyring: the first generates the data key and every key wraps
  it (a lone master key would silently wrap with one key only). On decryption it tries only data keys
  wrapped by a key of the keyring, in the keyring's order, and keeps the real reason a key failed.
- Master key providers are not thread safe: ``crypto`` builds one per thread; clients are shared.
"""

from __future__ import annotations

from typing import Any

import attr
from aws_encryption_sdk.exceptions import IncorrectMasterKeyError, InvalidDataKeyError, InvalidKeyIdError
from aws_encryption_sdk.key_providers.base import MasterKeyProvider, MasterKeyProviderConfig
from aws_encryption_sdk.key_providers.kms import MRKAwareKMSMasterKey
from aws_encryption_sdk.structures import EncryptedDataKey, MasterKeyInfo

from . import clients, conf
from .conf import KeyringConfig
from .exceptions import (
    DecryptionError,
    KMSFieldsConfigurationError,
    KMSFieldsError,
    KMSRequestError,
    KMSUnavailableError,
)

__all__ = ["KMS_PROVIDER_ID", "KeyringMasterKey", "KeyringMasterKeyProvider"]

KMS_PROVIDER_ID = "aws-kms"


class KeyringMasterKey(MRKAwareKMSMasterKey):
    """An ``MRKAwareKMSMasterKey`` whose KMS calls go through ``clients.kms_operation``."""

    keyring: KeyringConfig
    region: str

    def _call(self, operation: str, method: Any, *args: Any) -> Any:
        with clients.kms_operation(operation, self._key_id, self.region, self.keyring):
            return method(*args)

    def _generate_data_key(self, algorithm, encryption_context=None):  # type: ignore[no-untyped-def]
        return self._call("GenerateDataKey", super()._generate_data_key, algorithm, encryption_context)

    def _encrypt_data_key(self, data_key, algorithm, encryption_context=None):  # type: ignore[no-untyped-def]
        return self._call("Encrypt", super()._encrypt_data_key, data_key, algorithm, encryption_context)

    def _decrypt_data_key(self, encrypted_data_key, algorithm, encryption_context=None):  # type: ignore[no-untyped-def]
        return self._call("Decrypt", super()._decrypt_data_key, encrypted_data_key, algorithm, encryption_context)


@attr.s(hash=False)
class _KeyringProviderConfig(MasterKeyProviderConfig):
    keyring = attr.ib()


class KeyringMasterKeyProvider(MasterKeyProvider):
    """Holds every key of one keyring, each with the keyring's client for the key's region.

    Encrypts under ``KEY_ARNS``. Decrypts data keys wrapped by a key of ``KEY_ARNS`` or
    ``DECRYPT_KEY_ARNS``, by a replica of a listed multi-Region key (through the listed replica, in its
    region), or, with ``DISCOVERY``, by any key of the allowed accounts in the allowed partition.
    """

    provider_id = KMS_PROVIDER_ID
    _config_class = _KeyringProviderConfig
    vend_masterkey_on_decrypt = True

    def __init__(self, **kwargs: Any) -> None:
        self.keyring: KeyringConfig = self.config.keyring
        self.add_master_keys_from_list(self.keyring.key_arns)

    def local_key_for(self, wrapping_arn: str) -> str | None:
        """The key of this keyring that can decrypt a data key wrapped by ``wrapping_arn``, if any."""
        parsed = conf.parse_key_arn(wrapping_arn)
        if parsed is None:
            return None  # also keeps a hostile non-ARN away from the SDK's ARN parser
        for listed in self.keyring.readable_key_arns:
            if listed == wrapping_arn or self._replicates(listed, wrapping_arn):
                return listed
        discovery = self.keyring.discovery
        if (
            discovery is not None
            and parsed.account in discovery.account_ids
            and parsed.partition == discovery.partition
            and parsed.region in discovery.regions
        ):
            return wrapping_arn
        return None

    def _replicates(self, listed: str, wrapping_arn: str) -> bool:
        if not conf.parse_key_arn(listed).key_id.startswith("mrk-"):  # type: ignore[union-attr]
            return False  # only multi-Region keys have replicas; no master key built to learn that
        wrapped = EncryptedDataKey(
            key_provider=MasterKeyInfo(provider_id=KMS_PROVIDER_ID, key_info=wrapping_arn.encode()),
            encrypted_data_key=b"",
        )
        return self.master_key_for_decrypt(listed.encode()).owns_data_key(wrapped)

    def _new_master_key(self, key_id: bytes) -> KeyringMasterKey:
        key_arn = key_id.decode("utf-8", errors="replace")
        if self.local_key_for(key_arn) != key_arn:
            raise InvalidKeyIdError(f"{key_arn} is not a key of keyring {self.keyring.alias!r}")
        region = self.keyring.region_of(key_arn)
        master_key = KeyringMasterKey(key_id=key_arn, client=clients.kms_client(self.keyring, region))
        master_key.keyring = self.keyring
        master_key.region = region
        return master_key

    def decrypt_data_key_from_list(self, encrypted_data_keys, algorithm, encryption_context):  # type: ignore[no-untyped-def]
        """The data key, from the first data key a key of this keyring can decrypt.

        Replaces the SDK's loop, which would try a failing key twice and then report any KMS failure as
        a bare "unable to decrypt any data key". Here the reason survives: a KMS outage is
        ``KMSUnavailableError``, a refusal ``KMSRequestError``.
        """
        candidates = {}
        positions = {arn: position for position, arn in enumerate(self.keyring.readable_key_arns)}
        for edk in encrypted_data_keys:
            if edk.key_provider.provider_id != KMS_PROVIDER_ID:
                continue
            local = self.local_key_for(edk.key_provider.key_info.decode("utf-8", errors="replace"))
            # Each key of the keyring is asked at most once per message: a header that lists one key
            # nine times must not cost nine KMS calls on every read.
            if local is not None and local not in candidates:
                candidates[local] = (positions.get(local, len(positions)), local, edk)
        if not candidates:
            raise DecryptionError(
                "the stored value's data keys are wrapped by no key of keyring "
                f"{self.keyring.alias!r}, so no KMS call was made."
            )
        # In KEY_ARNS order, then DECRYPT_KEY_ARNS, then discovered keys: the key listed first (say, the
        # one in the local region) is tried first.
        failures: list[KMSFieldsError] = []
        for _position, local, edk in sorted(candidates.values(), key=lambda candidate: candidate[0]):
            master_key = self.master_key_for_decrypt(local.encode())
            try:
                return master_key.decrypt_data_key(edk, algorithm, encryption_context)
            except KMSFieldsError as err:
                failures.append(err)
            except (IncorrectMasterKeyError, InvalidDataKeyError) as err:
                failure = DecryptionError("a wrapped data key in the stored value is invalid.", code=type(err).__name__)
                failure.__cause__ = err
                failures.append(failure)
        raise _most_telling(failures)


def _most_telling(failures: list[KMSFieldsError]) -> KMSFieldsError:
    """Of the ways each key failed, the one that tells the caller most about what to do."""
    for kind in (KMSUnavailableError, KMSFieldsConfigurationError, KMSRequestError):
        for failure in failures:
            if isinstance(failure, kind):
                return failure
    return failures[0]
