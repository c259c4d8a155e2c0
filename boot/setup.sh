#!/usr/bin/env bash
# Installs what the project needs on a fresh machine, or says exactly what is missing:
#  - the Rust toolchain, components and target named in rust-toolchain.toml (RUSTUP_AUTO_INSTALL=0
#    is set on CI machines, so nothing installs them implicitly);
#  - QEMU (qemu-system-x86), OVMF, Bochs with its BIOS, VGA BIOS and terminal display plugin;
#  - make, gcc-12 and libc6-dev (the Linux guest's kernel module and static tools).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
toml="$root/rust-toolchain.toml"

# --- Rust ---------------------------------------------------------------------------------
if ! command -v rustup >/dev/null 2>&1; then
    echo "setup: rustup is missing; install it from https://rustup.rs and run this again" >&2
    exit 1
fi
channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$toml")
list() { sed -n "s/^$1 *= *\[\(.*\)\]/\1/p" "$toml" | tr -d '" ' | tr ',' ' '; }
components=$(list components)
targets=$(list targets)
if ! rustup toolchain list | grep -q "^$channel"; then
    echo "setup: installing Rust toolchain $channel" >&2
    args=(toolchain install "$channel" --profile minimal)
    for c in $components; do args+=(--component "$c"); done
    for t in $targets; do args+=(--target "$t"); done
    rustup "${args[@]}" >&2
else
    installed=$(rustup component list --toolchain "$channel" --installed 2>/dev/null)
    for c in $components; do
        grep -q "^$c" <<<"$installed" || rustup component add --toolchain "$channel" "$c" >&2
    done
    for t in $targets; do
        grep -q "^rust-std-$t" <<<"$installed" || rustup target add --toolchain "$channel" "$t" >&2
    done
fi

# --- Emulators ----------------------------------------------------------------------------
# make, gcc-12 and libc6-dev build the Linux guest's checkpoint module and static tools.
packages=(qemu-system-x86 ovmf bochs bochsbios vgabios bochs-term make gcc-12 libc6-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "${missing[@]}" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "${missing[@]}" >&2; }
    else
        echo "setup: missing packages; run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi
