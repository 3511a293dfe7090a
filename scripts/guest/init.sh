#!/bin/busybox sh
# shellcheck shell=dash
# /init of the e2e guest initramfs (copied in by setup.sh).
#
#  1. insmod virtio/fuse/virtiofs/9p modules (list in /etc/modules.load, in load order)
#  2. mount the host's / read-only over 9p (tag hostroot) at /host; the chroot is that tree
#  3. inside it: tmpfs on /mnt (with /mnt/host = non-recursive bind of the host root, so host
#     paths hidden by the guest's own /tmp etc. stay reachable), writable 9p tag vfsdout at
#     /mnt/out, tmpfs /tmp /run /var/tmp, devtmpfs /dev, proc, sysfs
#  4. read /mnt/out/.vfsd/config (TAG, SCRIPT, written by run.sh), mount -t virtiofs TAG /mnt/vfs
#  5. run SCRIPT (a host path, via /mnt/host) in the chroot with SHARE=/mnt/vfs OUT=/mnt/out
#  6. print VFSD-E2E-EXIT=<rc>, sync, umount the share (FUSE DESTROY), poweroff -f
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

up() { cut -d' ' -f1 /proc/uptime; }
mark() { echo "VFSD-E2E-T $1=$(up)"; }
die() {
  echo "VFSD-E2E-ERROR $*"
  echo "VFSD-E2E-EXIT=125"
  sync
  poweroff -f
  sleep 5
}

mark init
while read -r m; do
  insmod "/lib/modules/$m.ko" || die "insmod $m failed"
done < /etc/modules.load
mark modules

mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host \
  || die "mount 9p hostroot failed"
H=/host
mount -t tmpfs -o mode=0755 tmpfs $H/mnt || die "tmpfs /mnt"
mkdir -p $H/mnt/host $H/mnt/out $H/mnt/vfs
mount --bind $H $H/mnt/host || die "bind host root"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vfsdout $H/mnt/out \
  || die "mount 9p vfsdout failed"
for d in tmp run var/tmp; do
  [ -d $H/$d ] && { mount -t tmpfs -o mode=1777 tmpfs $H/$d || die "tmpfs /$d"; }
done
mount -t devtmpfs devtmpfs $H/dev || die "devtmpfs"
mkdir -p $H/dev/pts $H/dev/shm
mount -t devpts devpts $H/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $H/dev/shm
mount -t proc proc $H/proc || die "proc"
mount -t sysfs sysfs $H/sys || die "sysfs"

CFG=$H/mnt/out/.vfsd/config
[ -r $CFG ] || die "no $CFG"
TAG=$(sed -n 's/^TAG=//p' $CFG)
SCRIPT=$(sed -n 's/^SCRIPT=//p' $CFG)
MOUNTOPTS=$(sed -n 's/^MOUNTOPTS=//p' $CFG)
if [ -z "$TAG" ] || [ -z "$SCRIPT" ]; then die "bad config"; fi
mark mounts
mount -t virtiofs ${MOUNTOPTS:+-o "$MOUNTOPTS"} "$TAG" $H/mnt/vfs || die "mount -t virtiofs $TAG failed"
mark virtiofs

# The script runs with a clean environment plus whatever run.sh --env put in .vfsd/env.
# (The single-quoted command is expanded by the inner shell, in the chroot.)
# shellcheck disable=SC2016
chroot $H /usr/bin/env -i \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/tmp TERM=dumb LC_ALL=C TZ=UTC \
  SHARE=/mnt/vfs OUT=/mnt/out HOSTROOT=/mnt/host VFSD_TAG="$TAG" \
  /bin/sh -c '[ -r /mnt/out/.vfsd/env ] && . /mnt/out/.vfsd/env; cd "$SHARE" && exec /bin/sh "$0"' \
  "/mnt/host$SCRIPT"
rc=$?
mark script
echo "VFSD-E2E-EXIT=$rc"
sync
if umount $H/mnt/vfs; then echo "VFSD-E2E-UMOUNT=0"; else echo "VFSD-E2E-UMOUNT=1"; fi
umount $H/mnt/out 2>/dev/null
mark end
poweroff -f
sleep 5
