#!/usr/bin/env bash
# Boot one TCG guest against an already-listening vhost-user-fs backend socket and run a script
# in it.  See docs/testing-e2e.md.
#
#   run.sh --socket PATH --script GUEST_SCRIPT --out DIR [--tag myfs] [--timeout 480]
#          [--mem 1G] [--smp 1] [--env NAME=VALUE]... [--mount-opts OPTS] [--verbose]
#   (--smp defaults to $VFSD_GUEST_SMP or 1: under TCG one vCPU is faster than two here)
#
# In the guest, GUEST_SCRIPT (a host path; the guest sees the host's / read-only) runs with
# /bin/sh inside a chroot of the host root, cwd = $SHARE = /mnt/vfs (the virtio-fs mount),
# OUT=/mnt/out (= --out DIR on the host, writable over 9p), HOSTROOT=/mnt/host.
#
# Exit code: the guest script's exit code (parsed from "VFSD-E2E-EXIT=<n>" on the console);
#   124 when QEMU was killed on --timeout, 125 when the guest never reported an exit code
#   (boot/mount failure; see DIR/console.log).
# Output in DIR: console.log (serial console), qemu.log (QEMU's stderr), anything the script wrote.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${VFSD_GUEST_CACHE:-$REPO/.cache/guest}"
QEMU="${VFSD_QEMU:-qemu-system-x86_64}"

SOCKET="" TAG=myfs SCRIPT="" OUT="" TIMEOUT=480 MEM=1G SMP="${VFSD_GUEST_SMP:-1}" VERBOSE=0 MOUNTOPTS=""
ENVS=()
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --socket) SOCKET="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --script) SCRIPT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --mem) MEM="$2"; shift 2 ;;
    --smp) SMP="$2"; shift 2 ;;
    --env) ENVS+=("$2"); shift 2 ;;
    --mount-opts) MOUNTOPTS="$2"; shift 2 ;;
    --verbose|-v) VERBOSE=1; shift ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
done
if [ -z "$SOCKET" ] || [ -z "$SCRIPT" ] || [ -z "$OUT" ]; then usage; fi
[ -S "$SOCKET" ] || { echo "run.sh: $SOCKET is not a socket" >&2; exit 2; }
[ -f "$SCRIPT" ] || { echo "run.sh: no script $SCRIPT" >&2; exit 2; }
if [ ! -e "$CACHE/vmlinuz" ] || [ ! -s "$CACHE/initramfs.cpio.gz" ]; then
  echo "run.sh: guest not built; run scripts/guest/setup.sh" >&2; exit 2
fi
SCRIPT="$(realpath "$SCRIPT")"
case "$SCRIPT" in *[[:space:]]*) echo "run.sh: script path must not contain spaces" >&2; exit 2 ;; esac

mkdir -p "$OUT"
OUT="$(realpath "$OUT")"
rm -rf "$OUT/.vfsd"
mkdir -p "$OUT/.vfsd"
{ echo "TAG=$TAG"; echo "SCRIPT=$SCRIPT"; echo "MOUNTOPTS=$MOUNTOPTS"; } > "$OUT/.vfsd/config"
: > "$OUT/.vfsd/env"
for kv in ${ENVS[@]+"${ENVS[@]}"}; do
  k="${kv%%=*}" v="${kv#*=}"
  [[ "$k" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { echo "run.sh: bad --env $kv" >&2; exit 2; }
  printf "export %s='%s'\n" "$k" "${v//\'/\'\\\'\'}" >> "$OUT/.vfsd/env"
done
CONSOLE="$OUT/console.log"
: > "$CONSOLE"

# memory-backend size must equal -m; accept 1G / 1024M / 1024
case "$MEM" in
  *[Gg]) MEMSZ="$(( ${MEM%[Gg]} * 1024 ))M" ;;
  *[Mm]) MEMSZ="${MEM%[Mm]}M" ;;
  *) MEMSZ="${MEM}M" ;;
esac

# nosoftlockup: under TCG on a busy host the vCPU thread can go unscheduled for many seconds,
# which the guest's soft-lockup detector reports as a kernel bug ("BUG: soft lockup"); the hung
# task detector ("blocked for more than"), which a stuck virtio-fs request would trip, stays on.
APPEND="console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init mitigations=off random.trust_cpu=on tsc=reliable no_timer_check i8042.noaux i8042.nokbd nokaslr nosoftlockup"
args=(
  -accel tcg -M pc -cpu max -smp "$SMP" -m "$MEMSZ"
  -nodefaults -no-user-config -display none -monitor none -no-reboot
  -object "memory-backend-memfd,id=mem,size=$MEMSZ,share=on" -numa "node,memdev=mem"
  -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initramfs.cpio.gz" -append "$APPEND"
  -serial "file:$CONSOLE"
  -virtfs "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap"
  -virtfs "local,path=$OUT,mount_tag=vfsdout,security_model=none"
  -chardev "socket,id=c0,path=$SOCKET"
  -device "vhost-user-fs-pci,chardev=c0,tag=$TAG"
)

tailpid=""
cleanup() { [ -n "$tailpid" ] && kill "$tailpid" 2>/dev/null; true; }
trap cleanup EXIT
if [ "$VERBOSE" = 1 ]; then
  tail -n +1 -f "$CONSOLE" &
  tailpid=$!
fi

start=$(date +%s.%N)
set +e
# timeout sends TERM at --timeout and KILL 5 s later; it also forwards our TERM/INT to QEMU.
timeout --kill-after=5 "$TIMEOUT" "$QEMU" "${args[@]}" </dev/null >"$OUT/qemu.log" 2>&1
qrc=$?
set -e
end=$(date +%s.%N)
cleanup; tailpid=""
wall=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')
tr -d '\r' < "$CONSOLE" > "$CONSOLE.tmp" && mv "$CONSOLE.tmp" "$CONSOLE"

rc="$(sed -n 's/^.*VFSD-E2E-EXIT=\([0-9][0-9]*\).*$/\1/p' "$CONSOLE" | tail -n1)"
echo "run.sh: qemu exit $qrc after ${wall}s; $(grep -o 'VFSD-E2E-T [a-z]*=[0-9.]*' "$CONSOLE" | sed 's/VFSD-E2E-T //' | tr '\n' ' ')" >&2
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
  echo "run.sh: TIMEOUT after ${TIMEOUT}s (QEMU killed); tail of console:" >&2
  tail -n 20 "$CONSOLE" >&2
  exit 124
fi
if [ -z "$rc" ]; then
  echo "run.sh: guest reported no exit code (qemu rc $qrc); tail of console / qemu.log:" >&2
  tail -n 20 "$CONSOLE" >&2
  tail -n 20 "$OUT/qemu.log" >&2
  exit 125
fi
if grep -q 'VFSD-E2E-UMOUNT=1' "$CONSOLE"; then echo "run.sh: warning: umount of the share failed" >&2; fi
exit "$rc"
