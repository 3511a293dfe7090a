#!/bin/sh
# Guest side of test/e2e/guest-mapping.test.ts: what the guest sees of a share served with
# UID/GID and xattr name mapping, written to $OUT for the host to check. Runs as guest root in
# the chroot of the host's / (run.sh); cwd = $SHARE.
set -u
fail=0
ls -ln "$SHARE" > "$OUT/ls-before.txt" || fail=1
# A file made by guest uid/gid 1000, one made by guest root.
setpriv --reuid=1000 --regid=1000 --clear-groups touch "$SHARE/made-by-1000" || fail=1
touch "$SHARE/made-by-root" || fail=1
# An xattr the guest sets, and the names it lists and reads.
setfattr -n user.fromguest -v g "$SHARE/hostfile" || fail=1
getfattr -d -m - --absolute-names "$SHARE/hostfile" > "$OUT/getfattr.txt" 2>&1 || fail=1
ls -ln "$SHARE" > "$OUT/ls-after.txt" || fail=1
exit "$fail"
