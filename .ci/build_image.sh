#!/usr/bin/env bash
# Build the sandbox image if the engine does not have it yet (idempotent). Without a registry the builder
# debootstraps Debian from the mirror apt uses, which needs debootstrap and root.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="$(python3 -c 'from sandboxes.image import DEFAULT_IMAGE; print(DEFAULT_IMAGE)')"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "sandbox image $IMAGE already present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v debootstrap >/dev/null 2>&1; then
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q debootstrap
fi

$SUDO env "PATH=$PATH" PYTHONPATH="$PWD" python3 -c "import sys; from agent.cli import main; sys.exit(main(sys.argv[1:]))" sandbox build
docker image inspect "$IMAGE" >/dev/null
