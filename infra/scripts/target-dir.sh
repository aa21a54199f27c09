#!/usr/bin/env bash
# Prints the directory cargo builds into: CARGO_TARGET_DIR, build.target-dir
# in a cargo config, or the workspace's target/ (`cargo metadata` knows all
# three). Every script finds binaries through this.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo metadata --format-version 1 --no-deps --locked 2>/dev/null |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
