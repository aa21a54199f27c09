#!/usr/bin/env bash
# Makes sure Debian's Chromium is there for the web client's browser tests
# (Playwright drives it by path; its own browser download cannot work here).
set -euo pipefail
if command -v "${CHROMIUM:-chromium}" >/dev/null 2>&1; then
  exit 0
fi
echo "==> installing Debian's chromium for the browser tests"
sudo=""
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "chromium.sh: chromium is missing and this user cannot install it (apt-get install chromium)" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq chromium >/dev/null 2>&1 || {
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq chromium >/dev/null
}
command -v "${CHROMIUM:-chromium}" >/dev/null
