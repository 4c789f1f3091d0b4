"""Byte compatibility with the AWS Encryption SDK CLI, both ways, with the fast path on.

    AWS_ENCRYPTION_CLI=/path/to/aws-encryption-cli python scripts/cli_compat.py

The CLI pins an older aws-encryption-sdk than this app needs, so it lives in a virtualenv of its own
(``python -m venv /tmp/cli && /tmp/cli/bin/pip install aws-encryption-sdk-cli``); this script runs in
the app's virtualenv (with the bench extra) and calls the CLI by path. For plaintexts from empty to
1 MB: the CLI decrypts what the app wrote, and the app decrypts, on the fast path, what the CLI wrote
(suite AES_256_GCM_HKDF_SHA512_COMMIT_KEY, 4096-byte frames, the field's encryption context). KMS is
moto's server on 127.0.0.1, reached by the CLI through AWS_ENDPOINT_URL_KMS.
"""
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.__main__ import start_kms
local_kms, front, key_arn = start_kms()
os.environ.update(DJANGO_SETTINGS_MODULE="benchmarks.settings", BENCH_DATABASE=":memory:", BENCH_KMS_ENDPOINT=local_kms.endpoint, BENCH_KEY_ARN=key_arn)
import django

django.setup()
from benchmarks.benchapp.models import CachedRow
from django_kms_fields import conf, crypto, fastpath
keyring = conf.get_keyring("default")
binding = CachedRow._meta.get_field("value").field_binding()
context = crypto.encryption_context_for(keyring, binding)
env = {**os.environ, "AWS_ENDPOINT_URL_KMS": local_kms.endpoint, "AWS_DEFAULT_REGION": "eu-west-1"}
cli = os.environ.get("AWS_ENCRYPTION_CLI", "aws-encryption-cli")
work = tempfile.mkdtemp()
common = ["--quiet", "--wrapping-keys", f"key={key_arn}", "--commitment-policy", "require-encrypt-require-decrypt", "-S"]
ctx_args = ["--encryption-context", *[f"{k}={v}" for k, v in context.items()]]
taken = []  # one entry per read the fast path answered with a plaintext
real_read = fastpath.read


def counting_read(*args):
    answer = real_read(*args)
    if isinstance(answer, bytes):
        taken.append(answer)
    return answer


fastpath.read = counting_read
rng = random.Random(1)
for size in (0, 1, 32, 4095, 4096, 4097, 3 * 4096 + 17, 1 << 20):
    plaintext = rng.randbytes(size)
    open(f"{work}/app.bin", "wb").write(crypto.encrypt(plaintext, keyring, binding))
    subprocess.run([cli, "--decrypt", "-i", f"{work}/app.bin", "-o", f"{work}/app.out", *common, *ctx_args], env=env, check=True)
    assert open(f"{work}/app.out", "rb").read() == plaintext, ("CLI read", size)
    open(f"{work}/plain.bin", "wb").write(plaintext)
    subprocess.run([cli, "--encrypt", "-i", f"{work}/plain.bin", "-o", f"{work}/cli.bin", *common, *ctx_args,
                    "--algorithm", "AES_256_GCM_HKDF_SHA512_COMMIT_KEY", "--frame-length", "4096"], env=env, check=True)
    before = len(taken)
    out = crypto.decrypt(open(f"{work}/cli.bin", "rb").read(), keyring, binding)
    assert out == plaintext, ("app read", size)
    assert len(taken) == before + 1
    print("both ways:", size, "bytes")
front.stop()
local_kms.stop()
