#!/usr/bin/env bash
# Builds the deployable zip for a Linux Function App (custom handler): the `handler`
# binary next to host.json and one folder per function. Output: dist/quell-azure.zip
#   functions/azure-handler/package.sh [--target x86_64-unknown-linux-gnu]
# Deploy: az functionapp deployment source config-zip -g RG -n APP --src dist/quell-azure.zip
#     or: func azure functionapp publish APP (from a copy of dist/app)
set -euo pipefail
cd "$(dirname "$0")/../.."
target_args=()
bin_dir=target/handler
if [ "${1:-}" = "--target" ]; then
  target_args=(--target "$2"); bin_dir="target/$2/handler"
fi
# The handler profile: release with unwinding (a panic ends one invocation, not the process).
cargo build --profile handler -p azure-handler "${target_args[@]}"
rm -rf dist/app && mkdir -p dist/app
cp -r functions/azure-handler/app/. dist/app/
cp "$bin_dir/handler" dist/app/handler
chmod +x dist/app/handler
(cd dist/app && rm -f ../quell-azure.zip && python3 -m zipfile -c ../quell-azure.zip .)
echo "dist/quell-azure.zip: $(du -h dist/quell-azure.zip | cut -f1)"
