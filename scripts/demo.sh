#!/usr/bin/env bash
# Serve a directory with virtiofsd-ts and show it mounted in a small demo guest (QEMU 7.2, TCG).
#   npm run demo [-- DIR]      (default DIR: ./demo-share, created with a README in it)
# Installs QEMU, a Debian guest kernel and busybox on first use (scripts/guest/setup.sh).
set -Eeuo pipefail
on_err() { local rc=$?; echo "demo.sh: FAILED (exit $rc) at line $1: $BASH_COMMAND" >&2; exit "$rc"; }
trap 'on_err $LINENO' ERR
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR="${1:-$PWD/demo-share}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
[ -n "$(ls -A "$DIR")" ] || echo "Hello from the host: this directory is served by virtiofsd-ts." > "$DIR/README.txt"

bash scripts/guest/setup.sh
work="$(mktemp -d /tmp/vfsd-demo.XXXXXX)"
sock="$work/vfs.sock"
./bin/virtiofsd-ts --socket-path="$sock" --shared-dir="$DIR" --xattr 2>"$work/daemon.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  [ -S "$sock" ] && break
  kill -0 "$daemon" 2>/dev/null || break
  sleep 0.1
done
if [ ! -S "$sock" ]; then
  echo "demo.sh: FAILED: the daemon did not create $sock; its log:" >&2
  cat "$work/daemon.log" >&2
  exit 1
fi

cat > "$work/demo-guest.sh" <<'GUEST'
echo "--- in the guest: mount | grep virtiofs"
grep virtiofs /proc/mounts
echo "--- ls -la \$SHARE"
ls -la "$SHARE"
for f in "$SHARE"/*.txt; do [ -f "$f" ] && { echo "--- cat $f"; head -c 2000 "$f"; echo; }; done
echo "written by the demo guest at boot $(cut -d' ' -f1 /proc/uptime)s" > "$SHARE/hello-from-guest.txt"
echo "--- df -h \$SHARE"
df -h "$SHARE"
GUEST
echo "Booting the demo guest (about 15 s under TCG)..."
rc=0
bash scripts/guest/run.sh --socket "$sock" --script "$work/demo-guest.sh" --out "$work/out" --timeout 180 || rc=$?
sed -n '/--- in the guest/,/VFSD-E2E-EXIT/p' "$work/out/console.log" | grep -v VFSD-E2E || true
echo
if [ "$rc" != 0 ] || [ ! -s "$DIR/hello-from-guest.txt" ]; then
  echo "demo.sh: FAILED: the guest did not mount and write the share (run.sh exit $rc)." >&2
  echo "  guest console: $work/out/console.log  QEMU: $work/out/qemu.log  daemon: $work/daemon.log" >&2
  tail -n 20 "$work/daemon.log" >&2
  exit 1
fi
echo "On the host, $DIR now holds:"
ls -la "$DIR"
echo "(daemon log: $work/daemon.log)"
