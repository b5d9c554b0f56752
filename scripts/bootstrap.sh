#!/usr/bin/env bash
# Everything autoprune needs on a fresh Debian machine: the Fashion-MNIST package,
# a virtual environment in .venv, and the Python packages. Safe to run again: each
# step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
    echo "bootstrap: installing Debian's dataset-fashion-mnist" >&2
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null
fi

# The ARM profiles cross-compile with Debian's aarch64 gcc (their tests skip without it);
# linking a shared library needs the arm64 C library's start files too (crti.o), which
# --no-install-recommends would leave out.
if ! command -v aarch64-linux-gnu-gcc >/dev/null || [[ ! -f /usr/aarch64-linux-gnu/lib/crti.o ]]; then
    echo "bootstrap: installing Debian's gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (for the ARM profiles)" >&2
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu \
        libc6-dev-arm64-cross >/dev/null
fi

# The remote-device tests run an emulated aarch64 board under qemu-user; its root file
# system is built once with debootstrap (autoprune/testing/arm_device.py).
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
    echo "bootstrap: installing Debian's qemu-user-static and debootstrap (for the emulated ARM device)" >&2
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends qemu-user-static debootstrap >/dev/null
fi

# Multi-worker tests start a real PostgreSQL server (Debian's package; not as a service).
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    echo "bootstrap: installing Debian's postgresql (for the multi-worker tests)" >&2
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [[ ! -x .venv/bin/python ]]; then
    echo "bootstrap: creating .venv with $PYTHON" >&2
    "$PYTHON" -m venv .venv
fi

# Reinstall only when the project's dependencies changed. torch/torchvision are
# pinned to the pair that installs from this machine kind's local wheels; plain pip
# (not uv or poetry) finds them there.
stamp=.venv/.autoprune-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    echo "bootstrap: installing Python packages into .venv (a few minutes the first time)" >&2
    .venv/bin/python -m pip install --disable-pip-version-check -q -e ".[test,tvm]" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    .venv/bin/python -c "import torch, torchvision, torch_pruning, onnxruntime, optuna, tvm, xgboost, psycopg2"
    touch "$stamp"
fi
