#!/usr/bin/env bash
# Sets up .venv from uv.lock with a Python whose sqlite3 can load extensions (SpatiaLite).
# Debian's and Ubuntu's own python3 can; pyenv or python.org builds often cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

can_load_ext() {
  "$1" -c 'import sys, sqlite3; assert sys.version_info >= (3, 11); sqlite3.connect(":memory:").enable_load_extension(True)' 2>/dev/null
}

PY=""
for cand in "${LIANDONG_PYTHON:-}" /usr/bin/python3 /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11 "$(command -v python3 || true)"; do
  if [ -n "$cand" ] && [ -x "$cand" ] && can_load_ext "$cand"; then PY="$cand"; break; fi
done
if [ -z "$PY" ]; then
  echo "No Python >= 3.11 that can load SQLite extensions was found." >&2
  echo "Install Debian/Ubuntu's python3 (apt-get install python3 python3-venv) or set LIANDONG_PYTHON." >&2
  exit 1
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi; }

# SpatiaLite for the embedded default database.
if ! "$PY" -c 'import sqlite3; c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension("mod_spatialite")' 2>/dev/null; then
  echo "Installing libsqlite3-mod-spatialite ..."
  if ! { as_root apt-get install -y -q libsqlite3-mod-spatialite >/dev/null 2>&1 \
         || { as_root apt-get update -q >/dev/null 2>&1 && as_root apt-get install -y -q libsqlite3-mod-spatialite >/dev/null; }; }; then
    echo "SpatiaLite is missing: run 'sudo apt-get install libsqlite3-mod-spatialite' and try again." >&2
    exit 1
  fi
fi

# uv, pinned, in its own small environment (needs the venv module: python3-venv on Debian).
UV_VERSION="${UV_VERSION:-0.13.9}"
if [ ! -x .tools/bin/uv ] || [ "$(.tools/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  if ! "$PY" -m venv --help >/dev/null 2>&1 || ! "$PY" -c 'import ensurepip' 2>/dev/null; then
    as_root apt-get install -y -q python3-venv >/dev/null || { echo "Install python3-venv and try again." >&2; exit 1; }
  fi
  rm -rf .tools
  "$PY" -m venv .tools
  .tools/bin/pip install -q "uv==$UV_VERSION"
fi

UV_PROJECT_ENVIRONMENT=.venv UV_PYTHON_DOWNLOADS=never \
  .tools/bin/uv sync --locked --all-extras --python "$PY" -q
echo "Environment ready: .venv ($("$PY" --version))"
