#!/usr/bin/env bash
# Install Mesa's lavapipe, a Vulkan driver that runs on the CPU, so that needle.webgpu()
# finds an adapter on a CI machine without a GPU. The wgpu package itself comes from
# Needle's `webgpu` extra (pip install -e ".[test,webgpu]").
#
# Then: XDG_RUNTIME_DIR=/tmp python -m pytest --device webgpu -q
# (XDG_RUNTIME_DIR only silences a warning from the Vulkan loader.)
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null
