#!/usr/bin/env bash
# Prepare everything the real-guest e2e harness needs: host packages, a Debian guest kernel,
# a busybox initramfs carrying the virtio/fuse/virtiofs/9p modules, and a deterministic source
# tarball for the tar workload.  Idempotent: when everything is present it only stats files.
#
# Cache dir: $VFSD_GUEST_CACHE (default <repo>/.cache/guest).  Layout:
#   kernel/<kver>/...          dpkg -x of linux-image-<kver>
#   vmlinuz                    symlink to the kernel image
#   initramfs.cpio.gz          busybox + modules + init
#   initramfs.stamp            inputs the initramfs was built from (rebuilt when they change)
#   src-tree.tar[.sha256]      deterministic tarball for workload "tar"
#
# --packages-only: only the host packages (what the suite needs without a guest).
# Env: VFSD_GUEST_KERNEL=linux-image-6.1.0-N-amd64 pins the kernel package (default: the one
#      linux-image-amd64 depends on, resolved only when no kernel is cached yet).
set -Eeuo pipefail

PACKAGES_ONLY=0
case "${1:-}" in
  --packages-only) PACKAGES_ONLY=1 ;;
  "") ;;
  *) echo "usage: setup.sh [--packages-only]" >&2; exit 2 ;;
esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${VFSD_GUEST_CACHE:-$REPO/.cache/guest}"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"

log() { echo "[guest-setup] $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
# Any other failing command is named too: nothing in here exits without saying why.
on_err() { local rc=$?; log "FAILED (exit $rc) at setup.sh line $1: $BASH_COMMAND"; exit "$rc"; }
trap 'on_err $LINENO' ERR

# ---------------------------------------------------------------- host packages
APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 </dev/null \
      || fail "apt-get update failed (exit $?): Debian's package lists cannot be read; see apt's message above"
    APT_UPDATED=1
  fi
}

# What each package is for (printed when it is installed, so nobody wonders why).
PKG_WHY=(
  "qemu-system-x86:QEMU 7.2, which boots the test and demo guest"
  "qemu-system-common:the C virtiofsd (/usr/lib/qemu/virtiofsd), the peer the tests and benchmarks compare against"
  "busybox-static:the guest's initramfs userland"
  "cpio:packs the initramfs"
  "fio:I/O workloads run in the guest"
  "gcc:compiles the guest's C workloads"
  "libc6-dev:headers for those workloads and the source-tree tarball"
  "attr:xattr tools for the guest's metadata workload"
  "acl:ACL tools for the guest's metadata workload"
  "perl:the workloads' digest script"
  "util-linux:setpriv, which the tests use to run as another user or with fewer capabilities"
  "strace:measures the worker's syscall profile, from which the seccomp allowlist is built (npm run seccomp-profile)"
  "xz-utils:unpacks .ko.xz kernel modules"
  "zstd:unpacks .ko.zst kernel modules"
  "shellcheck:lints the suite's shell scripts"
)
PKGS=()
for e in "${PKG_WHY[@]}"; do PKGS+=("${e%%:*}"); done

# dpkg-query -W exits 1 when any package it is asked about is unknown to dpkg (a fresh machine),
# and still prints the ones it knows: read its output, not its status.
installed="$(dpkg-query -W -f='${Package} ${Status}\n' "${PKGS[@]}" 2>/dev/null || true)"
need_pkgs=()
for p in "${PKGS[@]}"; do
  grep -q "^$p install ok installed\$" <<<"$installed" || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "missing Debian packages: ${need_pkgs[*]}"
  for e in "${PKG_WHY[@]}"; do
    for p in "${need_pkgs[@]}"; do
      if [ "${e%%:*}" = "$p" ]; then log "  $p: ${e#*:}"; fi
    done
  done
  if [ "$(id -u)" != 0 ]; then
    fail "installing them needs root; run as root, or install them: apt-get install ${need_pkgs[*]}"
  fi
  command -v apt-get >/dev/null || fail "apt-get not found: install ${need_pkgs[*]} by hand"
  apt_update_once
  log "apt-get install ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2 </dev/null \
    || fail "apt-get install ${need_pkgs[*]} failed (exit $?); see apt's message above"
  installed="$(dpkg-query -W -f='${Package} ${Status}\n' "${need_pkgs[@]}" 2>/dev/null || true)"
  for p in "${need_pkgs[@]}"; do
    grep -q "^$p install ok installed\$" <<<"$installed" || fail "apt-get reported success, but $p is still not installed"
  done
  log "installed: ${need_pkgs[*]}"
fi
if [ "$PACKAGES_ONLY" = 1 ]; then log "ready: host packages"; exit 0; fi

# ---------------------------------------------------------------- guest kernel
kdir=""
if [ -n "${VFSD_GUEST_KERNEL:-}" ]; then
  kpkg="$VFSD_GUEST_KERNEL"
  kver="${kpkg#linux-image-}"
  [ -d "$CACHE/kernel/$kver/lib/modules/$kver" ] && kdir="$CACHE/kernel/$kver"
else
  # Reuse any cached kernel without touching apt (fast no-op path).
  for d in "$CACHE"/kernel/*/; do
    [ -d "$d" ] || continue
    v="$(basename "$d")"
    if [ -d "$d/lib/modules/$v" ] && [ -e "$d/boot/vmlinuz-$v" ]; then kdir="${d%/}"; kver="$v"; fi
  done
fi
if [ -z "$kdir" ]; then
  if [ -z "${VFSD_GUEST_KERNEL:-}" ]; then
    apt_update_once
    kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
    [ -n "$kpkg" ] || fail "cannot resolve the kernel package linux-image-amd64 depends on (apt-cache depends linux-image-amd64)"
    kver="${kpkg#linux-image-}"
  fi
  log "downloading $kpkg"
  tmpd="$(mktemp -d "$CACHE/.dl.XXXXXX")"
  # apt-get download writes into the cwd; the _apt sandbox warning is harmless as root.
  if ! (cd "$tmpd" && apt-get download -q "$kpkg" >&2 </dev/null); then
    apt_update_once
    (cd "$tmpd" && apt-get download -q "$kpkg" >&2 </dev/null) \
      || fail "apt-get download $kpkg failed: the guest kernel cannot be fetched from Debian's packages"
  fi
  rm -rf "$CACHE/kernel/$kver.tmp"
  mkdir -p "$CACHE/kernel"
  dpkg -x "$tmpd"/*.deb "$CACHE/kernel/$kver.tmp"
  rm -rf "$tmpd" "$CACHE/kernel/$kver"
  mv "$CACHE/kernel/$kver.tmp" "$CACHE/kernel/$kver"
  kdir="$CACHE/kernel/$kver"
fi
ln -sfn "kernel/$kver/boot/vmlinuz-$kver" "$CACHE/vmlinuz"

# ---------------------------------------------------------------- initramfs
# Load order matters: no modules.dep ships in the .deb and busybox insmod does not resolve deps.
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci fuse virtiofs netfs fscache 9pnet 9pnet_virtio 9p"
moddir="$kdir/lib/modules/$kver"
stamp_want="kver=$kver
modules=$MODULES
busybox=$(stat -c '%s %Y' /bin/busybox)
init=$(sha256sum "$HERE/init.sh" | cut -d' ' -f1)
setup=$(sha256sum "$HERE/setup.sh" | cut -d' ' -f1)"
if [ ! -s "$CACHE/initramfs.cpio.gz" ] || [ "$(cat "$CACHE/initramfs.stamp" 2>/dev/null)" != "$stamp_want" ]; then
  log "building initramfs for $kver"
  root="$(mktemp -d "$CACHE/.initramfs.XXXXXX")"
  mkdir -p "$root"/{bin,dev,proc,sys,host,lib/modules,etc}
  cp /bin/busybox "$root/bin/busybox"
  cp "$HERE/init.sh" "$root/init"
  chmod 0755 "$root/init" "$root/bin/busybox"
  : > "$root/etc/modules.load"
  for m in $MODULES; do
    f="$(find "$moddir/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n1)"
    if [ -z "$f" ]; then
      if grep -q "/$m.ko\$" "$moddir/modules.builtin" 2>/dev/null; then
        log "module $m is built in"; continue
      fi
      fail "module $m not found (neither .ko nor built in) in $kver"
    fi
    case "$f" in
      *.ko.xz)  xz -dc "$f"   > "$root/lib/modules/$m.ko" ;;
      *.ko.zst) zstd -qdc "$f" > "$root/lib/modules/$m.ko" ;;
      *.ko.gz)  gzip -dc "$f" > "$root/lib/modules/$m.ko" ;;
      *)        cp "$f" "$root/lib/modules/$m.ko" ;;
    esac
    echo "$m" >> "$root/etc/modules.load"
  done
  # mknod console so early init output is visible before devtmpfs is mounted
  mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
  ( cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --owner=0:0 ) \
    | gzip -1 > "$CACHE/initramfs.cpio.gz.tmp"
  mv "$CACHE/initramfs.cpio.gz.tmp" "$CACHE/initramfs.cpio.gz"
  rm -rf "$root"
  printf '%s' "$stamp_want" > "$CACHE/initramfs.stamp"
fi

# ---------------------------------------------------------------- source tarball (workload "tar")
# Built once from headers every Debian machine with gcc has (linux-libc-dev, libc6-dev), plus a
# few hand-made entries (symlinks, a hard link, odd modes, an empty dir, an empty file).  Fixed
# mtime/owner/order, GNU format (no atime/ctime), so re-tarring the extracted tree must give the
# same bytes.
if [ ! -s "$CACHE/src-tree.tar" ] || [ ! -s "$CACHE/src-tree.tar.sha256" ]; then
  log "building src-tree.tar"
  st="$(mktemp -d "$CACHE/.srctree.XXXXXX")"
  mkdir -p "$st/src-tree"
  for d in /usr/include/linux /usr/include/asm-generic /usr/include/x86_64-linux-gnu/sys \
           /usr/include/x86_64-linux-gnu/bits; do
    [ -d "$d" ] && cp -a "$d" "$st/src-tree/$(basename "$d")"
  done
  x="$st/src-tree/extra"
  mkdir -p "$x/empty-dir" "$x/deep/a/b/c/d/e/f"
  printf 'hello\n' > "$x/deep/a/b/c/d/e/f/leaf.txt"
  : > "$x/empty-file"
  printf '#!/bin/sh\necho run\n' > "$x/script.sh"; chmod 0755 "$x/script.sh"
  printf 'secret\n' > "$x/private"; chmod 0600 "$x/private"
  printf 'shared\n' > "$x/hardlink-a"; ln "$x/hardlink-a" "$x/hardlink-b"
  ln -s ../linux/types.h "$x/rel-symlink"
  ln -s /nonexistent/target "$x/dangling-symlink"
  ln -s deep/a "$x/dir-symlink"
  head -c 1048576 /dev/zero | tr '\0' 'z' > "$x/one-mib"
  chmod 0750 "$x/deep"
  tar -C "$st" --sort=name --mtime=@1000000000 --owner=0 --group=0 --numeric-owner \
      --format=gnu -cf "$CACHE/src-tree.tar.tmp" src-tree
  rm -rf "$st"
  mv "$CACHE/src-tree.tar.tmp" "$CACHE/src-tree.tar"
  sha256sum "$CACHE/src-tree.tar" | cut -d' ' -f1 > "$CACHE/src-tree.tar.sha256"
fi

log "ready: kernel $kver, cache $CACHE"
