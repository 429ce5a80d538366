#!/usr/bin/env bash
# README command 1: creates .venv and installs the project if needed, then starts the whole local stack
# (Redis, Label Studio with the COCO combined export, RQ worker, ML backend) until Ctrl-C.
# Arguments go to `python -m stack up`, e.g. scripts/stack.sh --demo --port 8081; see --help.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh
exec .venv/bin/python -m stack up "$@"
