"""Validation of the keys of a keyring and of where KMS is reached: ``KEY_ARNS``, ``DECRYPT_KEY_ARNS``,
``DISCOVERY``, ``REGION_NAME``, ``ENDPOINT_URL`` (and ``PROFILE_NAME``'s shape). Part of ``validation``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .conf import ConfigProblem, KeyArn, parse_key_arn

__all__ = [
    "key_arn_problems",
    "decrypt_key_arn_problems",
    "discovery_problems",
    "optional_text_problems",
    "region_problems",
    "endpoint_problems",
]

_ARN_HINT = "Use arn:<partition>:kms:<region>:<account>:key/<key-id>."
_DISCOVERY_KEYS = {"ACCOUNT_IDS", "PARTITION", "REGIONS"}
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")


def key_arn_problems(where: str, key_arns: object) -> tuple[list[ConfigProblem], list[KeyArn]]:
    if not isinstance(key_arns, (list, tuple)) or not key_arns:
        return [
            ConfigProblem(
                "E005",
                f"{where}['KEY_ARNS'] must be a non-empty list of KMS key ARNs.",
                'For example "KEY_ARNS": ["arn:aws:kms:eu-west-1:111122223333:key/1234abcd-..."]. The first key '
                "generates each data key; every listed key wraps it.",
            )
        ], []
    problems, parsed_arns = [], []
    for arn in key_arns:
        parsed = parse_key_arn(arn)
        if parsed is None:
            problems.append(
                ConfigProblem(
                    "E006",
                    f"{where}['KEY_ARNS'] holds {arn!r}, which is not a full KMS key ARN.",
                    f"{_ARN_HINT} Key ids and alias names are not accepted: the region is read from the ARN and an "
                    "alias can be repointed.",
                )
            )
        else:
            parsed_arns.append(parsed)
    if len({arn.arn for arn in parsed_arns}) != len(parsed_arns):
        problems.append(ConfigProblem("E024", f"{where}['KEY_ARNS'] lists the same ARN more than once.", "List each key once."))
    return problems, parsed_arns


def decrypt_key_arn_problems(where: str, decrypt_arns: object, key_arns: object) -> tuple[list[ConfigProblem], list[KeyArn]]:
    if not isinstance(decrypt_arns, (list, tuple)) or not all(parse_key_arn(arn) for arn in decrypt_arns):
        return [
            ConfigProblem(
                "E022",
                f"{where}['DECRYPT_KEY_ARNS'] must be a list of full KMS key ARNs.",
                "List the keys that may still decrypt old values but must not wrap new data keys, such as "
                "the key you rotated away from.",
            )
        ], []
    listed = set(key_arns) if isinstance(key_arns, (list, tuple)) and all(isinstance(a, str) for a in key_arns) else set()
    overlap = sorted(set(decrypt_arns) & listed)
    problems = []
    if overlap or len(set(decrypt_arns)) != len(decrypt_arns):
        problems.append(
            ConfigProblem(
                "E029",
                f"{where}['DECRYPT_KEY_ARNS'] repeats a key, or one of KEY_ARNS: {', '.join(overlap) or '-'}.",
                "A key in KEY_ARNS already decrypts; list each key once.",
            )
        )
    return problems, [parse_key_arn(arn) for arn in decrypt_arns]  # type: ignore[misc]


def discovery_problems(where: str, discovery: object) -> list[ConfigProblem]:
    if discovery is None:
        return []
    hint = (
        'For example "DISCOVERY": {"ACCOUNT_IDS": ["111122223333"], "PARTITION": "aws", "REGIONS": ["eu-west-1"]}: '
        "values wrapped by any key of those accounts in those regions (by default the regions of the listed keys) "
        "may then be decrypted, if IAM allows it."
    )
    if not isinstance(discovery, Mapping) or not {"ACCOUNT_IDS", "PARTITION"} <= set(discovery) <= _DISCOVERY_KEYS:
        return [ConfigProblem("E023", f"{where}['DISCOVERY'] must be a dict with ACCOUNT_IDS, PARTITION and optionally REGIONS.", hint)]
    accounts, partition, regions = discovery["ACCOUNT_IDS"], discovery["PARTITION"], discovery.get("REGIONS", ["us-east-1"])
    if (
        not isinstance(accounts, (list, tuple))
        or not accounts
        or not all(isinstance(a, str) and re.fullmatch(r"\d{12}", a) for a in accounts)
        or not (isinstance(partition, str) and re.fullmatch(r"aws[a-z-]*", partition))
        or not (isinstance(regions, (list, tuple)) and regions and all(isinstance(r, str) and _REGION.fullmatch(r) for r in regions))
    ):
        return [
            ConfigProblem(
                "E023",
                f"{where}['DISCOVERY'] needs a non-empty list of 12-digit ACCOUNT_IDS, a PARTITION such as 'aws', "
                "and REGIONS, if given, a non-empty list of region names.",
                hint,
            )
        ]
    return []


# --- where and how KMS is reached -----------------------------------------------------------------


def optional_text_problems(where: str, raw: Mapping[str, Any], key: str, check_id: str) -> list[ConfigProblem]:
    value = raw.get(key)
    if value is None or (isinstance(value, str) and value):
        return []
    return [
        ConfigProblem(
            check_id, f"{where}['{key}'] must be a non-empty string or None, not {value!r}.", f"Set {key} to a string, or remove it."
        )
    ]


def region_problems(where: str, raw: Mapping[str, Any], arns: list[KeyArn]) -> list[ConfigProblem]:
    problems = optional_text_problems(where, raw, "REGION_NAME", "E007")
    region_name = raw.get("REGION_NAME")
    elsewhere = [arn.arn for arn in arns if isinstance(region_name, str) and region_name and arn.region != region_name]
    if elsewhere:
        problems.append(
            ConfigProblem(
                "E025",
                f"{where}['REGION_NAME'] is {region_name!r} but these keys are in another region: {', '.join(elsewhere)}.",
                "Each key is used in the region of its ARN; remove REGION_NAME or fix the ARNs.",
            )
        )
    return problems


def endpoint_problems(where: str, endpoint_url: object, arns: list[KeyArn]) -> list[ConfigProblem]:
    if endpoint_url is None:
        return []
    if not (isinstance(endpoint_url, str) and endpoint_url.startswith(("http://", "https://"))):
        return [
            ConfigProblem(
                "E016",
                f"{where}['ENDPOINT_URL'] must be an http:// or https:// URL or None, not {endpoint_url!r}.",
                "For example https://vpce-0123-abcd.kms.eu-west-1.vpce.amazonaws.com.",
            )
        ]
    if len({arn.region for arn in arns}) > 1:
        return [
            ConfigProblem(
                "E008",
                f"{where} sets ENDPOINT_URL but its keys are in several regions.",
                "An endpoint serves one region: put keys of other regions in their own keyring, or drop ENDPOINT_URL.",
            )
        ]
    return []


def index_key_problems(where: str, raw: Mapping[str, Any]) -> tuple[list[ConfigProblem], list[KeyArn]]:
    """INDEX_KEY_ARN (the HMAC key of blind indexes) and PREVIOUS_INDEX_KEY_ARNS (matched while rebuilding)."""
    current = raw.get("INDEX_KEY_ARN")
    previous = raw.get("PREVIOUS_INDEX_KEY_ARNS", [])
    hint = (
        "INDEX_KEY_ARN is the full ARN of a KMS HMAC key (KeySpec HMAC_256, KeyUsage GENERATE_VERIFY_MAC); "
        "PREVIOUS_INDEX_KEY_ARNS lists the index keys rotated away from, matched until kms_fields_reindex has run."
    )
    problems: list[ConfigProblem] = []
    if current is not None and parse_key_arn(current) is None:
        problems.append(ConfigProblem("E036", f"{where}['INDEX_KEY_ARN'] must be a full KMS key ARN, not {current!r}.", hint))
    if not isinstance(previous, (list, tuple)) or not all(parse_key_arn(arn) for arn in previous):
        problems.append(ConfigProblem("E036", f"{where}['PREVIOUS_INDEX_KEY_ARNS'] must be a list of full KMS key ARNs.", hint))
        previous = []
    elif previous and current is None:
        problems.append(
            ConfigProblem("E037", f"{where}['PREVIOUS_INDEX_KEY_ARNS'] is set without INDEX_KEY_ARN.", "Set INDEX_KEY_ARN to the key new indexes use.")
        )
    elif current in previous or len(set(previous)) != len(previous):
        problems.append(
            ConfigProblem(
                "E037",
                f"{where}['PREVIOUS_INDEX_KEY_ARNS'] repeats a key, or INDEX_KEY_ARN.",
                "List each index key once: the current one in INDEX_KEY_ARN, older ones in PREVIOUS_INDEX_KEY_ARNS.",
            )
        )
    arns = [parsed for arn in (current, *previous) if (parsed := parse_key_arn(arn)) is not None]
    return problems, arns
