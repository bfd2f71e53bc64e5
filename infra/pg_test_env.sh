#!/usr/bin/env bash
# Prints a PostgreSQL + PostGIS URL for the test suites, starting the local cluster and creating
# the test role and database when it may (as root, with Debian's postgresql-common). Prints
# nothing when no server can be had; the tests then skip PostGIS outside CI and fail inside it.
set -uo pipefail
say() { echo "pg_test_env: $*" >&2; }

command -v pg_lsclusters >/dev/null || { say "PostgreSQL is not installed"; exit 0; }
read -r ver name port status _ < <(pg_lsclusters --no-header | head -n 1)
[ -n "${ver:-}" ] || { say "no PostgreSQL cluster"; exit 0; }

as_postgres() {
  if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else sudo -n -u postgres sh -c "$*"; fi
}

if [ ! -f "/usr/share/postgresql/$ver/extension/postgis.control" ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing postgresql-$ver-postgis-3"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-$ver-postgis-3" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-$ver-postgis-3" >/dev/null; } \
      || { say "cannot install PostGIS"; exit 0; }
  else
    say "PostGIS missing: apt-get install postgresql-$ver-postgis-3"; exit 0
  fi
fi

if [ "$status" != "online" ]; then
  pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >/dev/null 2>&1 \
    || as_postgres "pg_ctlcluster --skip-systemctl-redirect $ver $name start" >/dev/null 2>&1 \
    || { say "cannot start cluster $ver/$name"; exit 0; }
fi

as_postgres "psql -p $port -tAc \"SELECT 1 FROM pg_roles WHERE rolname='liandong'\"" 2>/dev/null | grep -q 1 \
  || as_postgres "psql -p $port -qc \"CREATE ROLE liandong LOGIN SUPERUSER PASSWORD 'liandong'\"" >/dev/null 2>&1 \
  || { say "cannot create the test role"; exit 0; }
as_postgres "psql -p $port -tAc \"SELECT 1 FROM pg_database WHERE datname='liandong_test'\"" 2>/dev/null | grep -q 1 \
  || as_postgres "createdb -p $port -O liandong liandong_test" >/dev/null 2>&1 \
  || { say "cannot create the test database"; exit 0; }

echo "postgresql+asyncpg://liandong:liandong@127.0.0.1:$port/liandong_test"
