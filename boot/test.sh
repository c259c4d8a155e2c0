#!/usr/bin/env bash
# The README's test command (CI runs exactly this): install what is missing, then run every
# test: host unit tests and the integration tests that boot the system under QEMU and Bochs.
# The benchmark figures the tests measured are printed at the end.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/boot/setup.sh" || exit 1
cd "$root"
mkdir -p target
rm -f target/bench-figures.txt
cargo test --release "$@"
status=$?
if [[ -f target/bench-figures.txt ]]; then
    echo
    echo "Benchmark figures (guest TSC cycles; instructions under -icount and Bochs):"
    cat target/bench-figures.txt
fi
exit $status
