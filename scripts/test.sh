#!/usr/bin/env bash
# Installs what the tests need (Chromium, iproute2, Node packages, GStreamer) and runs every test.
# Works on a fresh Debian machine with a Rust toolchain, as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
# Chromium for the page tests, iproute2 for the network namespaces of the weak-link tests,
# GStreamer to make the weak-link test's high-detail camera clip, a CJK font so screenshots of
# the Chinese pages are readable.
for pkg in chromium chromium-driver iproute2 fonts-wqy-microhei \
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# Node may come from outside Debian (as on these machines); install Debian's only if absent.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -f tests/browser/package-lock.json ]; then
  echo "== npm ci (tests/browser)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== vendored str0m's unit tests (with tongbu's ULPFEC patch, vendor/str0m/TONGBU.md)"
CARGO_TARGET_DIR=target/str0m cargo test --manifest-path vendor/str0m/Cargo.toml --lib --quiet

echo "== tests"
cargo test --workspace --all-targets 2>&1 | tee target/test-output.txt
