#!/usr/bin/env bash
# The README's test command (CI runs exactly this): install what is missing, then run every
# test: host unit tests and the integration tests that boot the system under QEMU and Bochs.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/boot/setup.sh"
cd "$root"
exec cargo test --release "$@"
