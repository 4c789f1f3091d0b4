"""The data-key cache's materials manager: the SDK's caching CMM, with its cache keys remembered.

The SDK's ``CachingCryptoMaterialsManager`` hashes the partition, the encryption context and every
wrapped data key with SHA-512 on every request to find the cache entry (about 18 µs per read and
more per write on the benchmark machine: once the fast path was in place, the largest single cost
of a value). The key is a pure function of those inputs, so this subclass remembers it per request
content (and by identity for the request objects the fast path reuses, and takes a write's request as
its parts from the fast path); everything else (the cache, its entries, ``MAX_AGE``, ``MAX_MESSAGES``, the byte limit, what
is cached and what is not) is the SDK's logic, unchanged and in the same order. See docs/design.md,
"The fast path".
"""

from __future__ import annotations

from typing import Any

from aws_encryption_sdk.caches import (
    CryptoMaterialsCacheEntryHints,
    build_decryption_materials_cache_key,
    build_encryption_materials_cache_key,
)
from aws_encryption_sdk.exceptions import CacheKeyError
from aws_encryption_sdk.materials_managers import EncryptionMaterialsRequest
from aws_encryption_sdk.materials_managers.caching import CachingCryptoMaterialsManager

__all__ = ["RememberingCachingMaterialsManager"]

# Cache keys remembered per manager (one manager per keyring and thread). Hostile stored values can
# add entries; the memo is emptied when it reaches this size.
_MEMO_SIZE = 512


class RememberingCachingMaterialsManager(CachingCryptoMaterialsManager):
    """``CachingCryptoMaterialsManager`` whose cache keys are computed once per distinct request."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._encryption_keys: dict[Any, bytes] = {}
        self._decryption_keys: dict[Any, bytes] = {}
        # id(request) -> (request, cache key): the fast path hands over the same request object for
        # every message whose header has the same context and wrapped data keys, so most reads find
        # their key here without hashing the request's parts. The request is held, so its id is not
        # reused while the entry lives.
        self._decryption_keys_by_request: dict[int, tuple[Any, bytes]] = {}

    @staticmethod
    def _remember(memo: dict[Any, Any], memo_key: Any, remembered: Any) -> None:
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[memo_key] = remembered

    def get_encryption_materials(self, request):  # type: ignore[no-untyped-def]
        # CachingCryptoMaterialsManager.get_encryption_materials (aws-encryption-sdk 4.0.x), with the
        # cache key remembered and the inner request built only when the backing manager is asked.
        if not self._should_cache_encryption_request(request):
            return self.backing_materials_manager.get_encryption_materials(request)
        return self.encryption_materials_for_length(
            request.encryption_context, request.plaintext_length, request.algorithm, request.frame_length,
            request.commitment_policy,
        )

    def encryption_materials_for_length(
        self, encryption_context: dict[str, str], plaintext_length: int, algorithm: Any, frame_length: int,
        commitment_policy: Any,
    ) -> Any:
        """``get_encryption_materials`` for a request of these parts, whose plaintext length is known and
        whose suite is safe to cache, without building the request while the cache answers.

        The cache key of the inner request (the request less what it says of the plaintext), the message
        and its bytes counted against the entry, the limits, and that inner request to the backing
        manager on a miss: the SDK's steps, in its order. The fast path's writes come here, one per message.
        """
        # Enum members are singletons, so their ids stand for them (hashing them runs Python code),
        # and pairs in another order only make another entry for the same cache key.
        memo_key = (id(algorithm), frame_length, id(commitment_policy), *encryption_context.items())

        def inner_request() -> EncryptionMaterialsRequest:
            return EncryptionMaterialsRequest(
                encryption_context=dict(encryption_context),
                frame_length=frame_length,
                algorithm=algorithm,
                commitment_policy=commitment_policy,
            )

        cache_key = self._encryption_keys.get(memo_key)
        if cache_key is None:
            # Checked once per memo entry: the memo key names the suite.
            if algorithm is not None and not algorithm.safe_to_cache():
                raise ValueError(f"{algorithm.name} is not safe to cache: ask get_encryption_materials")
            cache_key = build_encryption_materials_cache_key(partition=self.partition_name, request=inner_request())
            self._remember(self._encryption_keys, memo_key, cache_key)
        try:
            cache_entry = self.cache.get_encryption_materials(cache_key=cache_key, plaintext_length=plaintext_length)
        except CacheKeyError:
            pass
        else:
            if self._cache_entry_has_exceeded_limits(cache_entry):
                self.cache.remove(cache_entry)
            else:
                return cache_entry.value

        new_result = self.backing_materials_manager.get_encryption_materials(inner_request())
        if not new_result.algorithm.safe_to_cache() or plaintext_length >= self.max_bytes_encrypted:
            return new_result
        self.cache.put_encryption_materials(
            cache_key=cache_key,
            encryption_materials=new_result,
            plaintext_length=plaintext_length,
            entry_hints=CryptoMaterialsCacheEntryHints(lifetime=self.max_age),
        )
        return new_result

    def decrypt_materials(self, request):  # type: ignore[no-untyped-def]
        # CachingCryptoMaterialsManager.decrypt_materials (aws-encryption-sdk 4.0.x), with the cache key
        # remembered.
        known = self._decryption_keys_by_request.get(id(request))
        if known is not None and known[0] is request:
            cache_key = known[1]
        else:
            memo_key = (
                request.algorithm,
                frozenset(request.encrypted_data_keys),
                tuple(sorted(request.encryption_context.items())),
            )
            cache_key = self._decryption_keys.get(memo_key)
            if cache_key is None:
                cache_key = build_decryption_materials_cache_key(partition=self.partition_name, request=request)
                self._remember(self._decryption_keys, memo_key, cache_key)
                # By identity only here, where the parts were new: the SDK's path builds a new request
                # per message, which would only push the fast path's requests out.
                self._remember(self._decryption_keys_by_request, id(request), (request, cache_key))
        try:
            cache_entry = self.cache.get_decryption_materials(cache_key)
        except CacheKeyError:
            pass
        else:
            if self._cache_entry_is_too_old(cache_entry):
                self.cache.remove(cache_entry)
            else:
                return cache_entry.value

        new_result = self.backing_materials_manager.decrypt_materials(request)
        self.cache.put_decryption_materials(cache_key=cache_key, decryption_materials=new_result)
        return new_result
