#!/usr/bin/env bash
# The whole suite, as CI runs it (after `npm ci`, which builds the addon and the TypeScript).
# Layers: unit (pure TS), scripts (setup.sh with stand-ins for apt; shellcheck), native (the
# shim's syscalls), integration (our vhost-user frontend against our daemon and the C
# virtiofsd), crash (the worker killed at every crash point, then replies, host tree and state
# image compared), fuzz (the checked-in corpus and a fixed number of seeded inputs per target:
# test/fuzz), e2e (a real Linux guest under QEMU/TCG).
# VFSD_SKIP_E2E=1 leaves the guest out (for quick local runs).
set -Eeuo pipefail
on_err() { local rc=$?; echo "test.sh: FAILED (exit $rc) at line $1: $BASH_COMMAND" >&2; exit "$rc"; }
trap 'on_err $LINENO' ERR
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The real guest, the C peer and the suite's tools come from Debian's packages; setup.sh
# installs what is missing and says why (and, without the guest, only the packages).
if [ "${VFSD_SKIP_E2E:-0}" != 1 ]; then
  bash scripts/guest/setup.sh
else
  bash scripts/guest/setup.sh --packages-only
fi

files=()
for layer in unit scripts native integration crash fuzz; do
  while IFS= read -r f; do files+=("$f"); done < <(find "dist/test/$layer" -name '*.test.js' | sort)
done
if [ "${VFSD_SKIP_E2E:-0}" != 1 ]; then
  while IFS= read -r f; do files+=("$f"); done < <(find dist/test/e2e -name '*.test.js' | sort)
fi
# Two cores: the guest test is the long pole, the rest runs beside it.
exec node --test --test-concurrency=2 "${files[@]}"
