#!/usr/bin/env bash
# `make test` drives Debian's Chromium through playwright for the web-page tests. Install it when missing (as root,
# through apt); when that is not possible, stop with one line that names the package instead of a playwright trace.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "make test needs Debian's 'chromium' package for the web-page tests: run 'sudo apt-get install chromium', then 'make test' again." >&2
  exit 1
fi
echo "installing Debian's chromium for the web-page tests (apt-get, about a minute)"
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
command -v chromium >/dev/null 2>&1 || { echo "apt-get installed 'chromium' but no 'chromium' command is on PATH" >&2; exit 1; }
