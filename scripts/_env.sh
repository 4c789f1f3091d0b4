# Shared set-up for scripts/test.sh and scripts/example.sh: which Django lines are supported, the
# Python each is tested with, and a virtualenv with this package installed. Source it, then call
# its functions.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Oldest first; the last is the newest. Django 6.x needs Python 3.12+, 5.2 runs on 3.10-3.14.
SUPPORTED_DJANGO_LINES=(5.2 6.0 6.1)

python_version_for() {
    case $1 in
        5.2) echo 3.11 ;;
        6.0) echo 3.12 ;;
        6.1) echo 3.13 ;;
        *) echo "unsupported Django line $1 (supported: ${SUPPORTED_DJANGO_LINES[*]})" >&2; return 1 ;;
    esac
}

# The interpreter for a Python version: on PATH, or one installed by pyenv (this machine image has
# 3.11, 3.12 and 3.13 under pyenv; Debian 12's own python3 is 3.11).
find_python() {
    local version=$1 candidate
    for candidate in "python$version" \
        "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python"$version"; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import venv' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "Python $version is needed (on PATH as python$version, or under pyenv: pyenv install $version)" >&2
    return 1
}

# make_venv VENV_DIR DJANGO_LINE EXTRAS: a virtualenv on the line's Python with this package, its
# EXTRAS and the newest release of that Django line.
make_venv() {
    local venv_dir=$1 line=$2 extras=$3 python
    python=$(find_python "$(python_version_for "$line")")
    if [ -x "$venv_dir/bin/python" ] && ! "$venv_dir/bin/python" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$(python_version_for "$line")'.split('.'))))"; then
        rm -rf "$venv_dir"  # left by another line or Python: start again
    fi
    [ -x "$venv_dir/bin/python" ] || "$python" -m venv "$venv_dir"
    "$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$extras]" "django~=$line.0"
}
