#!/bin/sh
# Guest-side driver: run workloads one after another on the virtio-fs share, each in its own
# directory $SHARE/<name>, and write for each into $OUT:
#   <name>.log      its output
#   <name>.digest   digest.pl of $SHARE/<name> after it ran (times/inodes excluded)
# plus $OUT/results (lines "<name> <exit code> <seconds> <digest seconds>").  The host can digest the same
# directories after the guest is gone and compare (guest view == host view).
# Env: WORKLOADS (default "tar gcc fio meta posix"), SHARE, OUT (set by init / run.sh).
# Exit code: 0 if every workload exited 0, else 1.
WL="$(cd "$(dirname "$0")" && pwd)"
export WL
: "${SHARE:?}" "${OUT:?}"
WORKLOADS="${WORKLOADS:-tar gcc fio meta posix}"
# src-tree.tar lives in the host's cache dir, reachable read-only via the host root bind (the
# test passes its path in SRC_TAR; this default is the repository's own cache).
if [ -z "${SRC_TAR:-}" ]; then
  SRC_TAR="$WL/../../../.cache/guest/src-tree.tar"
fi
export SRC_TAR
umask 022

now() { cut -d' ' -f1 /proc/uptime; }
: > "$OUT/results"
fail=0
for w in $WORKLOADS; do
  if [ ! -f "$WL/$w.sh" ]; then
    echo "all.sh: no workload $w" >&2
    echo "$w 127 0" >> "$OUT/results"; fail=1; continue
  fi
  echo "=== workload $w"
  dir="$SHARE/$w"
  rm -rf "$dir"
  mkdir -p "$dir"
  t0=$(now)
  ( cd "$dir" && sh "$WL/$w.sh" "$dir" ) > "$OUT/$w.log" 2>&1
  rc=$?
  t1=$(now)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
  t2=$(now)
  if ! perl "$WL/digest.pl" "$dir" > "$OUT/$w.digest" 2> "$OUT/$w.digest.err"; then
    cat "$OUT/$w.digest.err"; [ $rc = 0 ] && rc=99
  fi
  [ -s "$OUT/$w.digest.err" ] || rm -f "$OUT/$w.digest.err"
  dsecs=$(awk -v a="$t2" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}')
  echo "$w $rc $secs $dsecs" >> "$OUT/results"
  echo "=== workload $w exit=$rc ${secs}s (digest ${dsecs}s) $(tail -n1 "$OUT/$w.digest" | cut -c1-40)"
  [ $rc = 0 ] || { fail=1; tail -n 15 "$OUT/$w.log"; }
done
exit $fail
