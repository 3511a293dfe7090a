#!/usr/bin/env bash
# The whole suite, as CI runs it (after `npm ci`, which builds the addon and the TypeScript).
# Layers: unit (pure TS), native (the shim's syscalls), integration (our vhost-user frontend
# against our daemon and the C virtiofsd), crash (the worker killed at every crash point, then
# replies, host tree and state image compared), e2e (a real Linux guest under QEMU/TCG).
# VFSD_SKIP_E2E=1 leaves the guest out (for quick local runs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export NODE_ENV=test

# The real guest and the C peer come from Debian's packages; install them when missing.
if [ "${VFSD_SKIP_E2E:-0}" != 1 ]; then
  bash scripts/guest/setup.sh
elif [ ! -x /usr/lib/qemu/virtiofsd ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-common >/dev/null
fi

files=()
for layer in unit native integration crash; do
  while IFS= read -r f; do files+=("$f"); done < <(find "dist/test/$layer" -name '*.test.js' | sort)
done
if [ "${VFSD_SKIP_E2E:-0}" != 1 ]; then
  while IFS= read -r f; do files+=("$f"); done < <(find dist/test/e2e -name '*.test.js' | sort)
fi
# Two cores: the guest test is the long pole, the rest runs beside it.
exec node --test --test-concurrency=2 "${files[@]}"
