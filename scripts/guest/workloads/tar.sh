#!/bin/sh
# Workload "tar": untar a deterministic source tree onto the share, re-tar it with the same
# options that made it, and compare bytes: once warm, once after dropping the guest's caches
# (so the second re-tar reads everything back from the backend).  Leaves the tree in place.
set -eu
D="$1"
: "${SRC_TAR:?}"
want="$(cat "$SRC_TAR.sha256")"
TAROPTS="--sort=name --mtime=@1000000000 --owner=0 --group=0 --numeric-owner --format=gnu"
fails=0
check() { if [ "$2" = "$3" ]; then echo "ok $1"; else echo "not ok $1: got $2 want $3"; fails=$((fails+1)); fi; }

tar -xf "$SRC_TAR" -C "$D"
echo "extracted $(find "$D/src-tree" | wc -l) entries"
check "extracted tree entry count" "$(find "$D/src-tree" | wc -l)" "$(tar -tf "$SRC_TAR" | wc -l)"

# re-tar onto the share itself (a large sequential write through virtio-fs), then read it back
# shellcheck disable=SC2086
tar -C "$D" $TAROPTS -cf "$D/retar-warm.tar" src-tree
check "re-tar (warm cache) sha256" "$(sha256sum < "$D/retar-warm.tar" | cut -d' ' -f1)" "$want"
sync
echo 3 > /proc/sys/vm/drop_caches
check "re-tar file read back after drop_caches" "$(sha256sum < "$D/retar-warm.tar" | cut -d' ' -f1)" "$want"
# shellcheck disable=SC2086
tar -C "$D" $TAROPTS -cf - src-tree > /tmp/retar-cold.tar
check "re-tar (cold cache) sha256" "$(sha256sum < /tmp/retar-cold.tar | cut -d' ' -f1)" "$want"
rm -f /tmp/retar-cold.tar "$D/retar-warm.tar"
# tar's own compare mode: every member's content/mode/size/link against the archive
if tar -C "$D" --compare -f "$SRC_TAR" >/tmp/tar-d.txt 2>&1; then echo "ok tar --compare"; else
  echo "not ok tar --compare"; head -n 20 /tmp/tar-d.txt; fails=$((fails+1)); fi
# hard link survived extraction
check "hard link count" "$(stat -c %h "$D/src-tree/extra/hardlink-a")" 2
check "hard link same inode" "$(stat -c %i "$D/src-tree/extra/hardlink-a")" "$(stat -c %i "$D/src-tree/extra/hardlink-b")"
echo "tar: $fails failed"
[ "$fails" = 0 ]
