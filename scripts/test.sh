#!/usr/bin/env bash
# README command 2: installs what the tests need (project venv, Debian chromium) and runs ALL tests.
# Real services only: the tests start a real Label Studio, a real Redis and real RQ workers themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh --with-detectron2

if [ ! -x /usr/bin/chromium ]; then
  echo "==> installing Debian chromium for the browser tests"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver
fi

echo "==> ruff (lint, format) and mypy: rules in pyproject.toml"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

mkdir -p artifacts
exec .venv/bin/python -m pytest -ra "$@"
