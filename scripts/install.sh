#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with every extra. Shared by stack.sh and test.sh.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
#   --with-detectron2   also build Detectron2 (the optional second training engine) from source against
#                       the installed torch: scripts/install_detectron2.sh (cached the same way)
set -euo pipefail
cd "$(dirname "$0")/.."

with_detectron2=0
for arg in "$@"; do
  case "$arg" in
    --with-detectron2) with_detectron2=1 ;;
    *) echo "usage: scripts/install.sh [--with-detectron2]" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
"$PYTHON" - <<'PY' || { echo "Python >= 3.11 is required (found $("$PYTHON" --version 2>&1))." >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.lsmt-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing the project into .venv (first time: a few minutes; torch comes from the local wheel cache)"
  log=.venv/install.log
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e '.[labelstudio,augment,model,backend,test]'; } >"$log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -40 >&2
    echo "pip install failed; full log: $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi

if [ "$with_detectron2" = 1 ]; then
  scripts/install_detectron2.sh
fi
