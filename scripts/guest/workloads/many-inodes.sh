#!/bin/sh
# Workload "many-inodes" (test/e2e/guest-many-inodes.test.ts): the guest walks a tree of many
# more files than the backend's RLIMIT_NOFILE, stats thousands of them (each a LOOKUP: the
# backend then knows that many inodes, and the guest holds their node ids), and checks st_ino of
# a sample across a worker SIGKILL the host sends in the middle.
#
#   1. find over $SHARE/tree, all of it, with %i (GNU find takes it from the directory entry):
#      $OUT/ino.all ("ino path", sorted); the count must be MANY_FILES
#   2. stat(1) of every file in the first MANY_STAT_DIRS directories (1,000 files each): a LOOKUP
#      of each (a round trip costs some 4-5 ms under TCG: every file of a large tree takes too
#      long); the st_ino must be those of step 1
#   3. writes $OUT/phase1 and waits for the host to create $SHARE/killed (the worker was killed)
#   4. stat of every 20th file of step 2: through the node ids the guest holds (GETATTR after the
#      attribute timeout), then after drop_caches (LOOKUP again); both must give step 1's st_ino
# Output in $OUT: many.log, ino.all, ino.stat, ino.sample, ino.after, ino.fresh, times ("step
# seconds"), many.result ("PASS" or "FAIL <n>").
# Env: SHARE, OUT (set by the guest init); MANY_FILES (how many files the tree holds, in
# directories d0, d1, ... of 1,000), MANY_STAT_DIRS (how many of those to stat).
set -u
: "${SHARE:?}" "${OUT:?}" "${MANY_FILES:?}" "${MANY_STAT_DIRS:?}"
LOG="$OUT/many.log"
: > "$LOG"
: > "$OUT/times"
fails=0
say() { echo "$*" >> "$LOG"; }
fail() { say "FAIL: $*"; fails=$((fails + 1)); }
now() { date +%s.%N; }
took() { echo "$1 $(echo "$(now) $2" | awk '{ printf "%.1f", $1 - $2 }')" >> "$OUT/times"; }

cd "$SHARE/tree" || { echo "FAIL 1" > "$OUT/many.result"; exit 1; }

t=$(now)
find . -type f -printf '%i %p\n' > "$OUT/ino.unsorted" || fail "find"
took find "$t"
sort -k2 "$OUT/ino.unsorted" > "$OUT/ino.all"
n=$(wc -l < "$OUT/ino.all")
[ "$n" -eq "$MANY_FILES" ] || fail "find saw $n files, not $MANY_FILES"

sleep 2 # past the attribute timeout (--cache=auto: 1 s)
d=0
: > "$OUT/ino.want"
while [ "$d" -lt "$MANY_STAT_DIRS" ]; do
  grep " ./d$d/" "$OUT/ino.all" >> "$OUT/ino.want"
  d=$((d + 1))
done
sort -k2 "$OUT/ino.want" > "$OUT/ino.want.sorted"
t=$(now)
# Four stat processes at a time: the backend answers one while the guest makes the next request.
awk '{ print $2 }' "$OUT/ino.want.sorted" | xargs -P 4 -n 250 stat -c '%i %n' > "$OUT/ino.stat.unsorted" || fail "stat"
took stat "$t"
sort -k2 "$OUT/ino.stat.unsorted" > "$OUT/ino.stat"
n=$(wc -l < "$OUT/ino.stat")
[ "$n" -eq $((MANY_STAT_DIRS * 1000)) ] || fail "stat saw $n files, not $((MANY_STAT_DIRS * 1000))"
cmp -s "$OUT/ino.stat" "$OUT/ino.want.sorted" || fail "stat and find disagree on st_ino"

awk 'NR % 20 == 1' "$OUT/ino.stat" > "$OUT/ino.sample"

echo ready > "$OUT/phase1"
i=0
while [ ! -e "$SHARE/killed" ]; do
  i=$((i + 1))
  [ "$i" -le 300 ] || { fail "the host never reported the kill"; break; }
  sleep 1
done

sleep 2
t=$(now)
awk '{ print $2 }' "$OUT/ino.sample" | xargs stat -c '%i %n' > "$OUT/ino.after" || fail "stat after the kill"
took after "$t"
cmp -s "$OUT/ino.after" "$OUT/ino.sample" || fail "st_ino changed across the kill (held node ids)"
sync
echo 3 > /proc/sys/vm/drop_caches
t=$(now)
awk '{ print $2 }' "$OUT/ino.sample" | xargs stat -c '%i %n' > "$OUT/ino.fresh" || fail "stat after drop_caches"
took fresh "$t"
cmp -s "$OUT/ino.fresh" "$OUT/ino.sample" || fail "st_ino changed across the kill (fresh lookups)"

if [ "$fails" -eq 0 ]; then echo PASS > "$OUT/many.result"; else echo "FAIL $fails" > "$OUT/many.result"; fi
say "done: $fails failures"
exit "$fails"
