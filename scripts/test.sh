#!/usr/bin/env bash
# Runs the whole test suite on SQLite, PostgreSQL and MariaDB (or the ones named as arguments), on
# every supported Django line (or those in DJANGO_LINES, say DJANGO_LINES="6.1"), each in its own
# virtualenv .venv-django-<line> on the Python that line is tested with. On a fresh machine it installs
# what it needs: the MariaDB client headers (apt, as root), the virtualenvs (prepared side by side),
# and it starts the local database servers if they are down.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$root"

databases=("$@")
[ ${#databases[@]} -gt 0 ] || databases=(sqlite postgresql mariadb)
read -r -a lines <<<"${DJANGO_LINES:-${SUPPORTED_DJANGO_LINES[*]}}"

# mysqlclient compiles against the MariaDB client library, whichever database runs.
if ! pkg-config --exists libmariadb 2>/dev/null && ! pkg-config --exists mysqlclient 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmariadb-dev pkg-config >/dev/null
    else
        echo "mysqlclient needs the MariaDB client headers: sudo apt-get install libmariadb-dev pkg-config" >&2
        exit 1
    fi
fi

# The virtualenvs are mostly download and compile time: prepared in parallel, each logging to a file.
logs=$(mktemp -d)
pids=()
for line in "${lines[@]}"; do
    make_venv "$root/.venv-django-$line" "$line" test >"$logs/$line.log" 2>&1 &
    pids+=($!)
done
for i in "${!lines[@]}"; do
    if ! wait "${pids[$i]}"; then
        cat "$logs/${lines[$i]}.log" >&2
        echo "could not prepare the virtualenv for Django ${lines[$i]}" >&2
        exit 1
    fi
done

port_open() { python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2)" "$1" 2>/dev/null; }
wait_for_port() {
    for _ in $(seq 1 30); do port_open "$1" && return 0; sleep 1; done
    echo "nothing answers on 127.0.0.1:$1" >&2
    return 1
}
for db in "${databases[@]}"; do
    case $db in
        postgresql)
            if ! port_open 5432; then
                pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
                wait_for_port 5432
            fi ;;
        mariadb)
            if ! port_open 3306; then
                start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
                wait_for_port 3306
            fi ;;
    esac
done

# Each run starts five interpreters (pytest and its workers) that import the app, the tests and their
# assertion-rewritten modules: with bytecode cached after the first run, each starts in about half the
# time (2.2 s instead of 4.2 s measured). Some machine images set PYTHONDONTWRITEBYTECODE.
unset PYTHONDONTWRITEBYTECODE

status=0
for line in "${lines[@]}"; do
    python=$root/.venv-django-$line/bin/python
    database_free_done=
    for db in "${databases[@]}"; do
        echo "=== $("$python" -c "import django, platform; print(f'Django {django.get_version()}, Python {platform.python_version()}')"), $db"
        # Workers beyond the two cores: most tests wait on the local KMS or on timeouts, not the CPU.
        # Tests that touch no database run with the first database of each line only (tests/conftest.py).
        KMS_FIELDS_TEST_DATABASE=$db KMS_FIELDS_TEST_DATABASE_FREE_DONE=$database_free_done \
            "$python" -m pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-4}" || status=1
        database_free_done=1
    done
done
exit $status
