#!/usr/bin/env bash
# The README's run command: install what is missing, build everything, boot it under QEMU
# with the serial console on this terminal. Arguments go to the runner (see `--help`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/boot/setup.sh"
cd "$root"
exec cargo run --release -q -p boot -- run "$@"
