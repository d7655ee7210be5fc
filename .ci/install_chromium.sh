#!/usr/bin/env bash
# Headless Chromium for the report tests (tests/e2e/test_report_browser.py) and benchmarks/report.py: Debian's
# chromium package and a font, nothing downloaded by a browser tool. Idempotent: does nothing when it is there.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(chromium --version 2>/dev/null | tail -1)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

echo "installing chromium from the configured Debian mirror"
# other installs may hold the dpkg lock for a while (the Docker step, unattended upgrades): wait for it
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
    chromium fonts-dejavu-core
chromium --version 2>/dev/null | tail -1
