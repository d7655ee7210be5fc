#!/usr/bin/env bash
# Make a Docker engine available for the sandbox tests: Debian's docker.io, dockerd started if it is not running,
# and gVisor's `runsc` (Debian's package) registered with the engine as the runtime "runsc", so the sandbox
# tests also run under gVisor.
#
# Idempotent, and safe on an engine that is already running (and shared): the runtime is added to
# /etc/docker/daemon.json without touching the other keys, and a running dockerd is told to reload it with
# SIGHUP (dockerd reloads `runtimes` on SIGHUP; running containers are not affected).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
DAEMON_JSON=/etc/docker/daemon.json
LOG=/var/log/qwq-dockerd.log

# Wait for the dpkg lock rather than fail: on a shared machine another apt (an image build) may hold it.
apt_install() {
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q "$@"
}

wait_for_engine() {
    for _ in $(seq 1 60); do
        if docker info >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    return 1
}

runsc_registered() {
    docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'
}

# Add (or correct) the "runsc" entry of daemon.json. "--network=none" is needed because this runsc refuses
# containers started with `--network none` otherwise ("cannot run with network enabled in root network
# namespace"); sandboxes never have a network under runsc anyway. Prints "changed" when the file was written.
register_runsc() {
    local runsc
    runsc="$(command -v runsc)"
    $SUDO mkdir -p "$(dirname "$DAEMON_JSON")"
    $SUDO python3 - "$DAEMON_JSON" "$runsc" <<'EOF'
import json, os, sys

path, runsc = sys.argv[1], sys.argv[2]
try:
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
except FileNotFoundError:
    config = {}
wanted = {"path": runsc, "runtimeArgs": ["--network=none"]}
runtimes = config.setdefault("runtimes", {})
if runtimes.get("runsc") != wanted:
    runtimes["runsc"] = wanted
    tmp = path + ".qwq-tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    print("changed")
EOF
}

dockerd_pid() {
    if [ -s /var/run/docker.pid ]; then cat /var/run/docker.pid; else pidof dockerd || true; fi
}

start_engine() {
    # With systemd (a normal machine) let it manage the service; without (a CI container) start dockerd directly.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl start docker
        if wait_for_engine; then echo "docker engine started by systemd"; return 0; fi
    fi
    # The default storage driver fails inside some VMs and containers; fall back to fuse-overlayfs, then vfs.
    local driver
    for driver in "" fuse-overlayfs vfs; do
        local args=()
        if [ -n "$driver" ]; then args=(--storage-driver "$driver"); fi
        echo "starting dockerd ${args[*]:-(default storage driver)}; log in $LOG"
        $SUDO sh -c "nohup dockerd ${args[*]:-} >>$LOG 2>&1 & echo \$! > /run/qwq-dockerd.pid"
        if wait_for_engine; then
            echo "docker engine running"
            return 0
        fi
        # Stop only the dockerd this script started, by its pid.
        $SUDO sh -c 'kill "$(cat /run/qwq-dockerd.pid)" 2>/dev/null || true'
        sleep 2
    done
    echo "could not start dockerd; last log lines:" >&2
    tail -n 30 "$LOG" >&2 || true
    return 1
}

# 1. The packages.
if ! command -v dockerd >/dev/null 2>&1; then
    echo "installing docker.io and runsc from the configured Debian mirror"
    apt_install docker.io fuse-overlayfs runsc
elif ! command -v runsc >/dev/null 2>&1; then
    echo "installing runsc (gVisor) from the configured Debian mirror"
    apt_install runsc
fi

# 2. The runtime in daemon.json (read by a dockerd that starts later, or reloaded below).
changed="$(register_runsc)"

# 3. The engine.
if docker info >/dev/null 2>&1; then
    echo "docker engine already running: $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')"
    if [ -n "$changed" ] || ! runsc_registered; then
        pid="$(dockerd_pid)"
        if [ -z "$pid" ]; then
            # A remote engine (DOCKER_HOST) or one this script cannot signal: the runsc tests will skip, saying so.
            echo "warning: runsc is in $DAEMON_JSON but no local dockerd to reload; restart the engine to load it" >&2
            exit 0
        fi
        echo "asking dockerd (pid $pid) to reload its runtimes (SIGHUP)"
        $SUDO kill -HUP "$pid"
    fi
else
    start_engine
fi

# 4. Check that the engine sees runsc (a reload is asynchronous: give it a few seconds).
for _ in $(seq 1 20); do
    if runsc_registered; then
        echo "runtimes: $(docker info --format '{{json .Runtimes}}')"
        exit 0
    fi
    sleep 0.5
done
echo "the engine does not list the runtime runsc after registering it in $DAEMON_JSON" >&2
exit 1
