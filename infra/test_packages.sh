#!/usr/bin/env bash
# The system packages the test suites drive, installed when missing and this user may (root or
# password-less sudo): Xvfb and xdotool for the field app, GL for Kivy, Debian's Chromium for the
# residents' page and the API docs page, a CJK font, PostgreSQL + PostGIS. `.ci/run` and
# `make test` both call it; one list. Without the rights it names what is missing and goes on
# (those suites then skip outside CI and fail inside it).
set -uo pipefail
# (PostGIS for the cluster's own version: infra/pg_test_env.sh installs it.)
PKGS=(xvfb xauth xdotool libgl1 libgl1-mesa-dri libegl1 chromium fonts-noto-cjk postgresql)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
command -v apt-get >/dev/null || { echo "test_packages: not Debian/Ubuntu; install: ${missing[*]}" >&2; exit 0; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi; }
echo "Installing test packages: ${missing[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { as_root apt-get update -q >/dev/null 2>&1 \
       && as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; } \
  || echo "test_packages: could not install ${missing[*]}; run: sudo apt-get install ${missing[*]}" >&2
exit 0
