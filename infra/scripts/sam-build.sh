#!/usr/bin/env bash
# Checks that `sam build` works: cargo-lambda builds every function's
# bootstrap. arm64 as in template.yaml when the aarch64 target can be
# installed; otherwise an x86_64 copy of the template with plain cargo.
# Debug mode: this proves the build, it is not the artifact to deploy.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0 SAM_BUILD_MODE=debug
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
rm -rf .aws-sam/build
# SAM_BUILD_SCRATCH=1 (CI): build in a throwaway target directory and delete
# it and the artifacts once checked; the arm64 tree is several GB of disk.
if [[ ${SAM_BUILD_SCRATCH:-} == 1 ]]; then
  export CARGO_TARGET_DIR=$PWD/.build/sam-target
  trap 'rm -rf "$CARGO_TARGET_DIR" .aws-sam/build' EXIT
fi
if rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
   || rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1; then
  arch=arm64
  sam build </dev/null
else
  arch=x86_64
  echo "sam-build.sh: the aarch64 target cannot be installed; checking the build on x86_64"
  mkdir -p .aws-sam
  sed -E 's/^( *- )arm64$/\1x86_64/' template.yaml > .aws-sam/template.x86_64.yaml
  CARGO_LAMBDA_COMPILER=cargo sam build -t .aws-sam/template.x86_64.yaml --base-dir . </dev/null
fi
# Every function in the template must have a bootstrap of the right machine.
.venv/bin/python - "$arch" <<'PY'
import pathlib, sys
from samtranslator.yaml_helper import yaml_parse
arch = sys.argv[1]
want = {"arm64": 183, "x86_64": 62}[arch]  # ELF e_machine: EM_AARCH64, EM_X86_64
template = yaml_parse(pathlib.Path("template.yaml").read_text())
functions = [k for k, v in template["Resources"].items() if v.get("Type") == "AWS::Serverless::Function"]
missing = []
for name in functions:
    boot = pathlib.Path(".aws-sam/build") / name / "bootstrap"
    if not boot.exists():
        missing.append(name)
        continue
    head = boot.read_bytes()[:20]
    machine = int.from_bytes(head[18:20], "little")
    if head[:4] != b"\x7fELF" or machine != want:
        sys.exit(f"{boot}: not an {arch} ELF executable (e_machine {machine})")
if missing:
    sys.exit(f"sam build produced no bootstrap for: {', '.join(missing)}")
print(f"sam build: {len(functions)} functions built for {arch}")
PY
