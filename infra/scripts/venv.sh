#!/usr/bin/env bash
# Creates ./.venv with the pinned Python tools, or refreshes it when
# infra/requirements-dev.txt changed. Idempotent and quick when up to date.
set -euo pipefail
cd "$(dirname "$0")/../.."
req=infra/requirements-dev.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ -x .venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "venv.sh: $python not found (Python 3.10+ is needed)" >&2; exit 1; }
echo "==> installing Python tools into .venv ($req)"
"$python" -m venv .venv
.venv/bin/pip install --disable-pip-version-check -q --upgrade pip
.venv/bin/pip install --disable-pip-version-check -q -r "$req"
echo "$want" > "$stamp"
