#!/usr/bin/env bash
# The test command of the README and of CI: starts the local S3, Kinesis and DynamoDB
# servers (installing them the first time), then runs every test of the workspace with the
# emulator-backed tests enabled. Under CI an emulator test that finds no server fails.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/emulators.sh
trap 'kill $LAKETIDE_EMU_PIDS 2>/dev/null || true' EXIT
export LAKETIDE_EMULATORS=1
cargo test --workspace --locked "$@"
