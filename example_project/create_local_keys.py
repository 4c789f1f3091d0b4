"""Creates two KMS keys and an HMAC key (for blind indexes) on a local KMS endpoint and prints their ARNs as shell assignments.

It stands in for creating keys in the AWS console or with Terraform; the app itself never creates keys.
Usage: python create_local_keys.py http://127.0.0.1:PORT
"""

import sys

import boto3

endpoint = sys.argv[1]
kms = boto3.client("kms", region_name="eu-west-1", endpoint_url=endpoint)
default_arn = kms.create_key(Description="clinic records")["KeyMetadata"]["Arn"]
archive_arn = kms.create_key(Description="clinic archive")["KeyMetadata"]["Arn"]
index_arn = kms.create_key(Description="clinic blind index", KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["Arn"]
print(f"export KMS_FIELDS_KEY_ARN={default_arn}")
print(f"export KMS_FIELDS_INDEX_KEY_ARN={index_arn}")
print(f"export KMS_FIELDS_ARCHIVE_KEY_ARN={archive_arn}")
