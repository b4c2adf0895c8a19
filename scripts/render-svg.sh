#!/usr/bin/env bash
# Renders an SVG to PNG with headless Chromium (Debian: apt-get install chromium).
#   scripts/render-svg.sh IN.svg OUT.png [WIDTHxHEIGHT]
set -euo pipefail
in=$(realpath "$1"); out=$(realpath -m "$2"); size=${3:-960,640}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size="$size" \
  --screenshot="$out" "file://$in" >/dev/null 2>&1
test -s "$out"
echo "$out"
