#!/usr/bin/env bash
# Make a Docker engine available for the sandbox tests: Debian's docker.io, dockerd started if it is not running.
# Idempotent: does nothing when `docker info` already works.
set -euo pipefail

if docker info >/dev/null 2>&1; then
    echo "docker engine already running: $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "installing docker.io from the configured Debian mirror"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q docker.io fuse-overlayfs
fi

wait_for_engine() {
    for _ in $(seq 1 60); do
        if docker info >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    return 1
}

# With systemd (a normal machine) let it manage the service; without (a CI container) start dockerd directly.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl start docker
    wait_for_engine && { echo "docker engine started by systemd"; exit 0; }
fi

LOG=/var/log/qwq-dockerd.log
# The default storage driver fails inside some VMs and containers; fall back to fuse-overlayfs, then vfs.
for driver in "" fuse-overlayfs vfs; do
    args=()
    if [ -n "$driver" ]; then args=(--storage-driver "$driver"); fi
    echo "starting dockerd ${args[*]:-(default storage driver)}; log in $LOG"
    $SUDO sh -c "nohup dockerd ${args[*]:-} >>$LOG 2>&1 & echo \$! > /run/qwq-dockerd.pid"
    if wait_for_engine; then
        echo "docker engine running"
        exit 0
    fi
    # Stop only the dockerd this script started, by its pid.
    $SUDO sh -c 'kill "$(cat /run/qwq-dockerd.pid)" 2>/dev/null || true' 
    sleep 2
done
echo "could not start dockerd; last log lines:" >&2
tail -n 30 "$LOG" >&2 || true
exit 1
