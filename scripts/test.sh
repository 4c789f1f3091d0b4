#!/usr/bin/env bash
# Runs the whole test suite on SQLite, PostgreSQL and MariaDB (or the ones named as arguments).
# On a fresh machine it installs what it needs: the MariaDB client headers (apt, as root), a
# virtualenv in .venv with the test extra, and it starts the local database servers if they are down.
# DJANGO_SPEC picks the Django release line (default: the newest the package allows).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

databases=("$@")
[ ${#databases[@]} -gt 0 ] || databases=(sqlite postgresql mariadb)
venv_dir=${VENV_DIR:-$root/.venv}

needs_mariadb=false
for db in "${databases[@]}"; do [ "$db" = mariadb ] && needs_mariadb=true; done

# mysqlclient compiles against the MariaDB client library.
if $needs_mariadb && ! pkg-config --exists libmariadb 2>/dev/null && ! pkg-config --exists mysqlclient 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmariadb-dev pkg-config >/dev/null
    else
        echo "mysqlclient needs the MariaDB client headers: sudo apt-get install libmariadb-dev pkg-config" >&2
        exit 1
    fi
fi

extra_packages=()
[ -n "${DJANGO_SPEC:-}" ] && extra_packages+=("$DJANGO_SPEC")
source "$root/scripts/_env.sh" "$venv_dir" test "${extra_packages[@]}"

port_open() { "$venv_dir/bin/python" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2)" "$1" 2>/dev/null; }
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

"$venv_dir/bin/python" -c "import django; print('Django', django.get_version())"
status=0
for db in "${databases[@]}"; do
    echo "=== tests on $db"
    # Three workers on two cores: many tests wait on timeouts at the local KMS, not on the CPU.
    KMS_FIELDS_TEST_DATABASE=$db "$venv_dir/bin/python" -m pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-3}" || status=1
done
exit $status
