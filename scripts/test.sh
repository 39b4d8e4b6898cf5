#!/usr/bin/env bash
# The test command of the README and of CI: starts the local S3, Kinesis and DynamoDB
# servers (installing them the first time), then runs every test of the workspace with the
# emulator-backed tests enabled. Under CI an emulator test that finds no server fails.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/emulators.sh
trap 'kill $LAKETIDE_EMU_PIDS 2>/dev/null || true' EXIT
# An independent Delta reader for the interoperability test.
python3 -c "import deltalake, pyarrow" 2>/dev/null || \
  python3 -m pip install --quiet --disable-pip-version-check "deltalake==1.6.6" "pyarrow>=18"
# Headless Chromium and playwright-core for the dashboard test (tests/e2e/ui.rs).
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "the dashboard test needs Chromium: sudo apt-get install chromium" >&2
  fi
fi
[ -d tests/ui/node_modules/playwright-core ] || \
  npm ci --prefix tests/ui --no-audit --no-fund --silent
export LAKETIDE_EMULATORS=1
cargo test --workspace --locked "$@"
