#!/usr/bin/env bash
# Installs what is missing, builds (Release) and starts tallyd with a working default:
# an embedded RocksDB in ./data, keys created on first start, listening on 127.0.0.1:8080.
# The admin key is TALLY_ADMIN_KEY if set; otherwise tallyd prints a bootstrap key on first start.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
TALLY_TARGETS="tallyd tally-audit" scripts/build.sh build
exec build/tallyd --data "${TALLY_DATA:-data}" --listen "${TALLY_LISTEN:-127.0.0.1:8080}" "$@"
