#!/bin/sh
# Workload "survive": a verifying workload for kill -9 / upgrade tests of the backend
# (test/e2e/guest-kill.test.ts; docs/reliability.md). Runs for about a minute of guest time
# while the host kills or upgrades the backend, then checks that nothing the guest can see
# went wrong. Every step checks its exit status; any failure makes the exit code non-zero.
#
# In $SHARE it makes:
#   survive/fixed/   a..h (generated content, sha256 manifest and st_ino recorded at the start),
#                    held-{0,1,2}.bin (opened by the holder), and briefly unlinked.bin
#   survive/lockfile the file the locker holds an fcntl write lock on
#   survive/churn/   survive_helper churn: rewrites + read-back, truncates, an O_APPEND log held
#                    open all along, write-then-rename, create/unlink, mkdir/rmdir, link, symlink
#   survive/sh/      a shell loop beside it (coreutils: mv, cp, cmp, mkdir, rm, rmdir, ln)
#   clock/           sync-N / sync-end markers for the host's clock mapping (removed at the end)
# Beside the churn run, in the background, for the whole run:
#   the holder  keeps held-*.bin and the unlinked-but-open unlinked.bin open, re-reads blocks
#               through those fds (page cache dropped) and rewrites blocks of the unlinked one;
#               at the end reads everything back through the same fds (content, st_ino, nlink 0)
#   the locker  holds F_WRLCK on bytes 0..99 of lockfile; at the end another process must see it
#               with F_GETLK (type, range, pid) and fail to take it; after the locker exits the
#               lock must be gone.
# At the end: st_ino of fixed/* and lockfile equal the start (before and after drop_caches),
# sha256 manifest of fixed/* checks, the kernel logged nothing about fuse/virtio, and
# digest.pl of survive/ goes to $OUT/survive.digest.
#
# Output in $OUT: survive.log (this script's), survive.trace (churn's per-operation
# CLOCK_MONOTONIC start/end; the host maps it with the clock markers), survive.ino.start,
# survive.ino.end, survive.digest, survive.result ("PASS" or "FAIL <n>").
#
# Env: SHARE, OUT (set by the guest init); SURVIVE_ITERS (churn iterations, default 1400),
#   SURVIVE_SH_ITERS (shell loop iterations, default 50), SURVIVE_HELPER (a prebuilt
#   survive_helper to use instead of compiling survive_helper.c with gcc), SURVIVE_UNTIL=FILE
#   (after its iterations the churn goes on, leaving the tree as it is, until FILE exists: the
#   host test creates $SHARE/clock/stop when its kill schedule is done), SURVIVE_REF=1 (a reference run on the
#   host: no drop_caches, no dmesg check; the tree must come out identical).
# Usage: sh survive.sh   (cwd irrelevant; writes under $SHARE and $OUT)
set -u
WL="$(cd "$(dirname "$0")" && pwd)"
: "${SHARE:?}" "${OUT:?}"
ITERS="${SURVIVE_ITERS:-1400}"
SH_ITERS="${SURVIVE_SH_ITERS:-50}"
REF="${SURVIVE_REF:-0}"
umask 022
export LC_ALL=C

R="$SHARE/survive"
CLK="$SHARE/clock"
LOG="$OUT/survive.log"
: > "$LOG" || exit 1
fails=0
exec 3>&1   # the console, whatever a step's stdout is redirected to
say()  { echo "$*" >> "$LOG"; echo "$*" >&3; }
fail() { fails=$((fails + 1)); say "FAIL: $*"; }
# run CMD...: run it, record a failure (with its exit code) if it fails; returns its status
run() { "$@"; rc=$?; [ "$rc" = 0 ] || fail "exit $rc: $*"; return "$rc"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
finish() {
  if [ "$fails" = 0 ]; then say "survive: PASS"; echo PASS > "$OUT/survive.result"
  else say "survive: FAIL ($fails failures)"; echo "FAIL $fails" > "$OUT/survive.result"; fi
  [ -n "${B:-}" ] && rm -rf "$B"
  [ "$fails" = 0 ]
  exit $?
}

B="$(mktemp -d /tmp/survive.XXXXXX)" || { fail "mktemp"; finish; }
H="$B/survive_helper"
say "survive: start at uptime $(uptime_s); ITERS=$ITERS SH_ITERS=$SH_ITERS REF=$REF"
if [ -n "${SURVIVE_HELPER:-}" ]; then
  # prebuilt (the host test compiles it once: saves ~10 s of gcc under TCG)
  run cp "$SURVIVE_HELPER" "$H" || finish
else
  run gcc -O2 -Wall -Werror -o "$H" "$WL/survive_helper.c" >>"$LOG" 2>&1 || finish
fi
NODROP=""
[ "$REF" = 1 ] && NODROP="--no-drop"
if [ "$REF" != 1 ]; then dmesg > "$B/dmesg.start" 2>/dev/null || fail "dmesg"; fi

# ---- the starting tree
rm -rf "$R" "$CLK" || { fail "rm -rf old tree"; finish; }
run mkdir -p "$R/fixed" "$R/churn" "$R/sh" "$CLK" || finish
k=0
for f in a b c d e f g h; do
  k=$((k + 1))
  "$H" gen $((100 + k)) $((k * 5000 + 17)) > "$R/fixed/$f" || { fail "gen fixed/$f"; finish; }
done
for k in 0 1 2; do
  "$H" gen $((7000 + k)) 200000 > "$R/fixed/held-$k.bin" || { fail "gen fixed/held-$k.bin"; finish; }
done
printf 'lock target\n' > "$R/lockfile" || { fail "write lockfile"; finish; }
(cd "$R/fixed" && sha256sum a b c d e f g h held-0.bin held-1.bin held-2.bin) > "$B/fixed.sha256" \
  || { fail "sha256sum at start"; finish; }
(cd "$R" && stat -c '%n %i' fixed/a fixed/b fixed/c fixed/d fixed/e fixed/f fixed/g fixed/h \
  fixed/held-0.bin fixed/held-1.bin fixed/held-2.bin lockfile) > "$OUT/survive.ino.start" \
  || { fail "stat at start"; finish; }

# ---- background: holder and locker
"$H" hold "$R/fixed" "$B/stop" "$B/hold.ready" > "$B/hold.out" 2>&1 &
HPID=$!
"$H" lock "$R/lockfile" "$B/stop" "$B/lock.ready" > "$B/lock.out" 2>&1 &
LBG=$!
n=0
while [ ! -e "$B/hold.ready" ] || [ ! -e "$B/lock.ready" ]; do
  n=$((n + 1))
  if [ $n -gt 600 ]; then fail "holder/locker not ready after 60 s"; cat "$B/hold.out" "$B/lock.out" >> "$LOG"; touch "$B/stop"; finish; fi
  sleep 0.1
done
LPID="$(cat "$B/lock.ready")"
say "survive: holder pid $HPID, locker pid $LPID, ready at uptime $(uptime_s)"

# ---- the shell loop (background) and the churn (foreground)
sh_churn() {
  cd "$R/sh" || exit 1
  c() { "$@" || { echo "sh-churn iteration $i: exit $?: $*"; exit 1; }; }
  i=0
  while [ $i -lt "$SH_ITERS" ]; do
    i=$((i + 1))
    m=$((i % 5))
    printf 'line %d\n' $i >> log || { echo "sh-churn $i: append"; exit 1; }
    printf 'content %d\n' $i > tmp || { echo "sh-churn $i: write tmp"; exit 1; }
    c mv tmp "file_$m"
    c mkdir "dir$i"
    echo "x $i" > "dir$i/x" || { echo "sh-churn $i: write dir$i/x"; exit 1; }
    c cp "file_$m" "dir$i/copy"
    c cmp "file_$m" "dir$i/copy"
    if [ $i -gt 2 ]; then
      c rm "dir$((i - 2))/x" "dir$((i - 2))/copy"
      c rmdir "dir$((i - 2))"
    fi
    c ln -sf "file_$m" link
    got="$(cat link)" || { echo "sh-churn $i: cat link"; exit 1; }
    [ "$got" = "content $i" ] || { echo "sh-churn $i: link reads '$got'"; exit 1; }
  done
  n=0
  while IFS= read -r l; do
    n=$((n + 1))
    [ "$l" = "line $n" ] || { echo "sh-churn: log line $n is '$l'"; exit 1; }
  done < log || exit 1
  [ "$n" = "$SH_ITERS" ] || { echo "sh-churn: log has $n lines, want $SH_ITERS"; exit 1; }
  echo "sh-churn: $SH_ITERS iterations verified"
}
( sh_churn ) > "$B/sh.out" 2>&1 &
SPID=$!

t0="$(uptime_s)"
"$H" churn "$R/churn" "$CLK" "$ITERS" "$OUT/survive.trace" ${NODROP:+"$NODROP"} ${SURVIVE_UNTIL:+--until "$SURVIVE_UNTIL"} > "$B/churn.out" 2>&1
rc=$?
cat "$B/churn.out" >> "$LOG"
[ $rc = 0 ] || fail "churn exit $rc: $(tail -n 3 "$B/churn.out")"
wait $SPID
rc=$?
cat "$B/sh.out" >> "$LOG"
[ $rc = 0 ] || fail "sh-churn exit $rc: $(tail -n 3 "$B/sh.out")"
say "survive: churn and shell loop done at uptime $(uptime_s) ($(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN{printf "%.1f", b-a}') s)"

# ---- end checks
# the lock is still held, seen from another process
run "$H" getlk "$R/lockfile" "$LPID" >> "$LOG" 2>&1
# st_ino unchanged: with the dentries the guest holds, then with fresh LOOKUPs
stat_end() {
  (cd "$R" && stat -c '%n %i' fixed/a fixed/b fixed/c fixed/d fixed/e fixed/f fixed/g fixed/h \
    fixed/held-0.bin fixed/held-1.bin fixed/held-2.bin lockfile) > "$1"
}
if stat_end "$B/ino.cached"; then
  cmp -s "$OUT/survive.ino.start" "$B/ino.cached" || { fail "st_ino changed (cached dentries)"; diff "$OUT/survive.ino.start" "$B/ino.cached" >> "$LOG"; }
else fail "stat at the end (cached)"; fi
if [ "$REF" != 1 ]; then
  if ! { sync && echo 3 > /proc/sys/vm/drop_caches; }; then fail "drop_caches"; fi
fi
if stat_end "$OUT/survive.ino.end"; then
  cmp -s "$OUT/survive.ino.start" "$OUT/survive.ino.end" || { fail "st_ino changed (after drop_caches)"; diff "$OUT/survive.ino.start" "$OUT/survive.ino.end" >> "$LOG"; }
else fail "stat at the end"; fi
(cd "$R/fixed" && sha256sum -c --quiet "$B/fixed.sha256") >> "$LOG" 2>&1 || fail "sha256 manifest of fixed/"

# let the holder verify and the locker let go
: > "$B/stop" || fail "create stop file"
wait $HPID
rc=$?
cat "$B/hold.out" >> "$LOG"
[ $rc = 0 ] || fail "holder exit $rc: $(tail -n 3 "$B/hold.out")"
wait $LBG
rc=$?
cat "$B/lock.out" >> "$LOG"
[ $rc = 0 ] || fail "locker exit $rc: $(tail -n 3 "$B/lock.out")"
run "$H" getlk-free "$R/lockfile" >> "$LOG" 2>&1

if [ "$REF" != 1 ]; then
  if dmesg > "$B/dmesg.end" 2>/dev/null; then
    tail -n +$(($(wc -l < "$B/dmesg.start") + 1)) "$B/dmesg.end" > "$B/dmesg.new"
    # (an oops's "Modules linked in:" line names fuse and virtio whatever the oops was about)
    if grep -iE 'fuse|virtio|blocked for|i/o error|hung' "$B/dmesg.new" | grep -v 'Modules linked in' > "$B/dmesg.bad"; then
      fail "kernel messages during the run:"; while IFS= read -r l; do say "  $l"; done < "$B/dmesg.bad"
    fi
  else fail "dmesg at the end"; fi
fi

rm -rf "$CLK" || fail "rm clock"
td="$(uptime_s)"
if perl "$WL/digest.pl" "$R" > "$OUT/survive.digest" 2> "$B/digest.err"; then
  say "survive: digest $(tail -n 1 "$OUT/survive.digest") ($(awk -v a="$td" -v b="$(uptime_s)" 'BEGIN{printf "%.1f", b-a}') s)"
else
  fail "digest.pl: $(head -c 300 "$B/digest.err")"
fi
finish
