# Shared set-up for scripts/test.sh and scripts/example.sh: a virtualenv with this package installed.
# Usage: source scripts/_env.sh VENV_DIR EXTRAS [PIP_ARGS...]
set -euo pipefail

venv_dir=$1
extras=$2
shift 2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ ! -x "$venv_dir/bin/python" ]; then
    python3 -m venv "$venv_dir"
fi
"$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$extras]" "$@"
