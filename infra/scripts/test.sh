#!/usr/bin/env bash
# `make test`: installs what it needs, starts moto, runs every check, and stops
# what it started, also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
step() { printf '\n==> %s\n' "$*"; }

step "tools"
df -h . | awk 'NR == 2 { print "disk: " $4 " free of " $2 }'
infra/scripts/venv.sh
export PATH="$PWD/.venv/bin:$PATH"
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
infra/scripts/chromium.sh

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "template: cfn-lint (with serverless rules), sam validate, SAM transform test"
export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
cfn-lint template.yaml --append-rules cfn_lint_serverless.rules
sam validate --lint -t template.yaml
pytest -q -p no:cacheprovider tests/template

step "sam build (cargo-lambda)"
infra/scripts/sam-build.sh

step "moto server"
trap 'infra/scripts/moto.sh stop' EXIT
endpoint=$(infra/scripts/moto.sh start)
echo "moto at $endpoint"
export AWS_ENDPOINT_URL=$endpoint AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
unset AWS_PROFILE AWS_SESSION_TOKEN

step "tests: unit, property, contract (embedded + moto), poller, end-to-end (both backends)"
# One build: nextest builds every test and, for hanul-local's and the
# functions' own tests, their binaries too, with the same features. A separate
# `cargo build --bins` would compile the AWS SDK a second time, because the
# dev-dependencies change the features of crates deep under it.
# Wherever cargo builds (CARGO_TARGET_DIR, a cargo config, or target/).
target_dir=$(infra/scripts/target-dir.sh)
export HANUL_LOCAL_BIN=$target_dir/debug/hanul-local
cargo nextest run --workspace --locked --no-fail-fast

step "web client in headless Chromium (screenshots in .build/web-artifacts)"
pytest -q -p no:cacheprovider tests/web
