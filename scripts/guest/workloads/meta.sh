#!/bin/sh
# Workload "meta": rename, link, symlink, chmod, chown, xattr, flock, mmap, fifo, permission
# checks for an unprivileged user, using ordinary tools.  One "ok"/"not ok" line per check.
set -u
D="$1"
cd "$D" || exit 1
fails=0 n=0
ok()  { n=$((n+1)); echo "ok $n $1"; }
nok() { n=$((n+1)); fails=$((fails+1)); echo "not ok $n $1"; }
t()   { name="$1"; shift; if "$@" >/tmp/t.out 2>&1; then ok "$name"; else nok "$name: $(head -c 300 /tmp/t.out)"; fi; }
eq()  { if [ "$2" = "$3" ]; then ok "$1"; else nok "$1: got '$2' want '$3'"; fi; }

# --- rename
echo one > r1
t "rename file" mv r1 r2
eq "rename: old gone" "$(test -e r1 && echo yes || echo no)" no
eq "rename: content" "$(cat r2)" one
echo two > r3
t "rename over existing" mv -f r2 r3
eq "rename over existing: content" "$(cat r3)" one
mkdir -p dA/sub dB && echo x > dA/sub/f
t "rename dir across dirs" mv dA/sub dB/moved
eq "renamed dir content" "$(cat dB/moved/f)" x
t "rename dir to new name" mv dB dC
eq "renamed parent readable" "$(cat dC/moved/f)" x

# --- hard links
echo linked > l1
t "link" ln l1 l2
eq "nlink after link" "$(stat -c %h l1)" 2
t "link into subdir" ln l1 dC/l3
eq "nlink after 2nd link" "$(stat -c %h l2)" 3
t "unlink one name" rm l2
eq "nlink after unlink" "$(stat -c %h l1)" 2
echo more >> dC/l3
eq "write via one link seen via other" "$(tr '\n' ' ' < l1)" "linked more "

# --- symlinks
t "symlink relative" ln -s l1 s1
t "symlink dangling" ln -s no/such/target s2
t "symlink to dir" ln -s dC s3
eq "readlink" "$(readlink s1)" l1
eq "readlink dangling" "$(readlink s2)" no/such/target
eq "follow symlink" "$(head -n1 s1)" linked
eq "follow dir symlink" "$(cat s3/moved/f)" x
eq "lstat type" "$(stat -c %F s1)" "symbolic link"
t "rename symlink" mv s2 s2b
eq "renamed symlink target" "$(readlink s2b)" no/such/target

# --- chmod / chown
echo m > modes
for m in 0600 0644 0755 0700 4755 2755 1777 0000 0444; do
  chmod "$m" modes; eq "chmod $m" "$(stat -c %a modes)" "$(echo "$m" | sed 's/^0*\(.\)/\1/; s/^$/0/')"
done
chmod 0644 modes
mkdir sticky && chmod 1777 sticky
eq "chmod dir sticky" "$(stat -c %a sticky)" 1777
t "chown file" chown 1234:5678 modes
eq "chown result" "$(stat -c %u:%g modes)" 1234:5678
t "chgrp only" chgrp 4321 modes
eq "chgrp result" "$(stat -c %u:%g modes)" 1234:4321
t "chown symlink itself (-h)" chown -h 99:98 s1
eq "lchown result" "$(stat -c %u:%g s1)" 99:98
eq "lchown left target alone" "$(stat -c %u:%g l1)" 0:0
echo suid > suid && chmod 4755 suid && chown 1000:1000 suid
eq "chown by root clears suid" "$(stat -c %a suid)" 755

# --- xattrs
echo x > xf
if setfattr -n user.test -v hello xf 2>/tmp/xe; then
  ok "setfattr user.test"
  eq "getfattr value" "$(getfattr --only-values -n user.test xf 2>&1)" hello
  t "setfattr second attr" setfattr -n user.other -v 0x00ff10 xf
  eq "listxattr" "$(getfattr -d -m '^user\.' xf 2>/dev/null | grep -c '^user\.')" 2
  t "setfattr replace" setfattr -n user.test -v world xf
  eq "getfattr replaced" "$(getfattr --only-values -n user.test xf 2>&1)" world
  t "setfattr remove" setfattr -x user.other xf
  eq "removed attr gone" "$(getfattr -n user.other xf >/dev/null 2>&1 && echo present || echo absent)" absent
  mkdir xd && t "setfattr on dir" setfattr -n user.dir -v d xd
  eq "getfattr on dir" "$(getfattr --only-values -n user.dir xd 2>&1)" d
  big=$(head -c 3000 /dev/zero | tr '\0' 'v')
  t "setfattr 3000-byte value" setfattr -n user.big -v "$big" xf
  eq "getfattr 3000-byte value" "$(getfattr --only-values -n user.big xf | wc -c)" 3000
  t "xattr survives rename" mv xf xf2
  eq "xattr after rename" "$(getfattr --only-values -n user.test xf2 2>&1)" world
  eq "xattr on missing name fails (ENODATA)" "$(getfattr -n user.none xf2 2>&1 | grep -c 'No such attribute')" 1
else
  nok "setfattr user.test: $(cat /tmp/xe) (backend without xattr support?)"
fi

# --- flock (util-linux flock(1)); works whether the backend or the guest kernel implements it
: > lockf
( flock -x lockf sh -c 'touch held; while [ ! -e release ]; do sleep 0.1; done' ) &
bg=$!
i=0; while [ ! -e held ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
eq "flock: holder has the lock" "$(test -e held && echo yes)" yes
eq "flock -n exclusive conflicts" "$(flock -n -x lockf true && echo got || echo busy)" busy
eq "flock -n shared conflicts with exclusive" "$(flock -n -s lockf true && echo got || echo busy)" busy
touch release; wait $bg
eq "flock after release" "$(flock -n -x lockf true && echo got || echo busy)" got
( flock -s lockf sh -c 'touch held2; while [ ! -e release2 ]; do sleep 0.1; done' ) &
bg=$!
i=0; while [ ! -e held2 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
eq "flock shared+shared" "$(flock -n -s lockf true && echo got || echo busy)" got
touch release2; wait $bg
rm -f held held2 release release2

# --- mmap (compiled in the guest)
if gcc -O1 -o /tmp/mmap_rw "$WL/mmap_rw.c" 2>/tmp/cc.err; then
  if /tmp/mmap_rw mmap.dat > /tmp/mm.out 2>&1; then ok "mmap_rw ($(grep -c '^ok' /tmp/mm.out) sub-checks)"; else nok "mmap_rw: $(grep -v '^ok' /tmp/mm.out | tr '\n' ' ')"; fi
  sync; echo 3 > /proc/sys/vm/drop_caches
  eq "mmap file tail after drop_caches" "$(tail -c 4 mmap.dat)" TAIL
else
  nok "compile mmap_rw: $(head -c 300 /tmp/cc.err)"
fi

# --- fifo, truncate, touch, mkdir -p, rm -r
t "mkfifo" mkfifo fifo
eq "fifo type" "$(stat -c %F fifo)" fifo
( echo through-fifo > fifo ) & r="$(cat fifo)"; wait
eq "fifo data" "$r" through-fifo
t "truncate grow" truncate -s 10000 trunc
eq "truncate size" "$(stat -c %s trunc)" 10000
eq "truncate zeros" "$(tr -d '\0' < trunc | wc -c)" 0
t "truncate shrink" truncate -s 123 trunc
eq "shrunk size" "$(stat -c %s trunc)" 123
t "mkdir -p deep" mkdir -p tree/a/b/c/d/e/f/g/h
for i in 1 2 3 4 5 6 7 8 9 10; do echo "$i" > "tree/a/b/c/file$i"; done
t "cp -a tree" cp -a tree tree2
t "rm -r tree" rm -r tree
eq "tree gone" "$(test -e tree && echo yes || echo no)" no
eq "copy intact" "$(cat tree2/a/b/c/file7)" 7

# --- permissions as an unprivileged user (uid 1000) via setpriv
mkdir perm && chmod 0755 perm && echo secret > perm/ro && chmod 0644 perm/ro
u() { setpriv --reuid=1000 --regid=1000 --clear-groups "$@"; }
eq "non-root can read 0644" "$(u cat perm/ro 2>&1)" secret
eq "non-root cannot write 0644 root file" "$(u sh -c 'echo x >> perm/ro' >/dev/null 2>&1 && echo wrote || echo denied)" denied
eq "non-root cannot create in 0755 root dir" "$(u touch perm/new >/dev/null 2>&1 && echo created || echo denied)" denied
chmod 0600 perm/ro
eq "non-root cannot read 0600" "$(u cat perm/ro >/dev/null 2>&1 && echo read || echo denied)" denied
mkdir perm/open && chmod 0777 perm/open
t "non-root creates in 0777 dir" u sh -c 'echo mine > perm/open/userfile'
eq "created file owner" "$(stat -c %u:%g perm/open/userfile)" 1000:1000
chmod 1777 perm/open
echo rootfile > perm/open/rootfile
eq "sticky dir: non-root cannot delete root's file" "$(u rm -f perm/open/rootfile >/dev/null 2>&1 && echo deleted || echo denied)" denied
t "sticky dir: non-root deletes own file" u rm perm/open/userfile

echo "meta: $n checks, $fails failed"
[ "$fails" = 0 ]
