#!/usr/bin/env bash
# Debian's Chromium for the browser tests (driven by Playwright for Python, which the dev extra
# installs). Never `playwright install`: it downloads a browser build, which cannot work here.
set -euo pipefail
if [ ! -x /usr/bin/chromium ] || [ ! -d /usr/share/fonts/truetype/noto ]; then
  echo "setup: installing Debian's chromium (and an emoji font for the screenshots)" >&2
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  $sudo_cmd apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null
fi
