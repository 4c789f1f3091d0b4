#!/usr/bin/env bash
# Runs the example project end to end, offline, on the newest supported Django line: a virtualenv in
# .venv with the package, a local KMS endpoint (moto's server) on 127.0.0.1, two keys on it,
# migrations, system checks and the demo.
# Set KMS_FIELDS_KEY_ARN (and AWS credentials) beforehand to run against real AWS instead.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/_env.sh"
newest=${SUPPORTED_DJANGO_LINES[-1]}
venv_dir=${VENV_DIR:-$root/.venv}
make_venv "$venv_dir" "$newest" example
python=$venv_dir/bin/python
cd "$root/example_project"

if [ -z "${KMS_FIELDS_KEY_ARN:-}" ]; then
    # Credentials for the local endpoint only; moto accepts any.
    export AWS_ACCESS_KEY_ID=example AWS_SECRET_ACCESS_KEY=example AWS_EC2_METADATA_DISABLED=true
    export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
    port=$("$python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    "$venv_dir/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    moto_pid=$!
    trap 'kill $moto_pid 2>/dev/null || true' EXIT
    for _ in $(seq 1 50); do
        "$python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
        sleep 0.2
    done
    export KMS_FIELDS_ENDPOINT_URL=http://127.0.0.1:$port
    eval "$("$python" create_local_keys.py "$KMS_FIELDS_ENDPOINT_URL")"
    echo "Local KMS on $KMS_FIELDS_ENDPOINT_URL, key $KMS_FIELDS_KEY_ARN"
fi
export EXAMPLE_DATABASE=${EXAMPLE_DATABASE:-$(mktemp -d)/clinic.sqlite3}

"$python" manage.py migrate --verbosity 0
"$python" manage.py check
"$python" manage.py kms_fields_check
"$python" manage.py demo
"$python" manage.py kms_fields_reencrypt clinic --dry-run
"$python" manage.py kms_fields_reindex clinic --check
