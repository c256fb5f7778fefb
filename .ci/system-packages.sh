#!/usr/bin/env bash
# System packages CI needs beyond pip: Debian's Chromium for tests/test_browser.py (Playwright drives it
# through executable_path=/usr/bin/chromium; `playwright install` is never run).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi
