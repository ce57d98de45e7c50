#!/usr/bin/env bash
# make build: the Lambda bootstrap.zip with cargo-lambda (zig from PyPI), arm64 when the
# aarch64-unknown-linux-gnu target is installed, otherwise x86_64, and prints its size.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo_lambda="$root/.local/lambda-venv/bin/cargo-lambda"
export PATH="$root/.local/lambda-venv/bin:$PATH"

arch=x86_64
flag=(--x86-64)
if rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  arch=arm64
  flag=(--arm64)
else
  cat >&2 <<'NOTE'
note: the aarch64-unknown-linux-gnu target is not installed, so this builds an x86_64 zip.
      For the arm64 zip the template deploys by default, run
        rustup target add aarch64-unknown-linux-gnu
      and build again, or deploy this zip with the template's Architecture=x86_64.
NOTE
fi
"$cargo_lambda" lambda build --release --locked "${flag[@]}" --output-format zip
zip="target/lambda/api-key-rotator/bootstrap.zip"
[ -f "$zip" ] || { echo "no $zip was produced" >&2; exit 1; }
echo "$arch" > "$(dirname "$zip")/ARCH"
bytes=$(stat -c %s "$zip")
echo "built $zip for $arch: $bytes bytes ($(( (bytes + 1023) / 1024 )) KiB)"
