#!/usr/bin/env bash
# Cold-start benchmark (not a test): every function of template.yaml started
# as Lambda starts it, through the emulated Runtime API, against a moto
# server this script starts and stops; next to a hello-world lambda_runtime
# function built with the same (release) profile. Prints a Markdown table:
# init (process start to the first /next), the first invocation, the ratio.
#
#   make coldstart               # 5 cold starts per function
#   RUNS=20 make coldstart
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-5}
infra/scripts/venv.sh
cargo build --release --locked -q -p hanul-functions --bin hanul-lambda --example hello-world
cargo build --release --locked -q -p hanul-local --bin hanul-local
release=$(infra/scripts/target-dir.sh)/release

trap 'infra/scripts/moto.sh stop' EXIT
endpoint=$(infra/scripts/moto.sh start)
export AWS_ENDPOINT_URL=$endpoint AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
unset AWS_PROFILE AWS_SESSION_TOKEN

"$release/hanul-local" lambda coldstart --runs "$RUNS" \
  --bin "$release/hanul-lambda" --hello "$release/examples/hello-world"
