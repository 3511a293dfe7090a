// Path-relative syscalls (dirfd may be AT_FDCWD). Strings arrive as UTF-8 C strings.
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "args.h"

#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif
#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x1000U
#endif
#ifndef MAX_HANDLE_SZ
#define MAX_HANDLE_SZ 128
#endif

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "handle layout is written in host order");

namespace vfs {
namespace {

constexpr size_t kHandleHdr = 12;  // u32 mount_id, u32 handle_bytes, i32 handle_type

// Storage for a file_handle plus the largest f_handle (file_handle ends in a flexible array).
struct Handle {
  alignas(file_handle) unsigned char raw[sizeof(file_handle) + MAX_HANDLE_SZ];
  file_handle* fh() { return reinterpret_cast<file_handle*>(raw); }
  unsigned char* bytes() { return raw + sizeof(file_handle); }
};
static_assert(sizeof(file_handle) == 8, "f_handle follows handle_bytes and handle_type");

Napi::Value Openat(const Napi::CallbackInfo& info) {
  Args a(info, "openat");
  int dirfd = a.Int(0);
  std::string path = a.Str(1);
  uint32_t flags = a.Flags(2);
  uint32_t mode = a.Flags(3);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(VFS_RETRY(openat(dirfd, path.c_str(), static_cast<int>(flags), mode))));
}

Napi::Value Openat2(const Napi::CallbackInfo& info) {
  Args a(info, "openat2");
  int dirfd = a.Int(0);
  std::string path = a.Str(1);
  uint32_t flags = a.Flags(2);
  uint32_t mode = a.Flags(3);
  int64_t resolve = a.I64(4);
  VFS_CHECK(a);
  // Zero-extend the flags: openat2 rejects any unknown (e.g. sign-extended) bit with EINVAL.
  open_how how{};
  how.flags = flags;
  how.mode = mode;
  how.resolve = static_cast<uint64_t>(resolve);
  return Num(a.Env(), SysRet(VFS_RETRY(syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof(how)))));
}

// statx (fstatat where the kernel has none) into the 17 u64 slots of src/native/binding.ts ST.
int64_t DoStat(int dirfd, const char* cpath, uint32_t flags, uint64_t* o) {
  struct statx sx {};
  if (statx(dirfd, cpath, static_cast<int>(flags), STATX_BASIC_STATS | STATX_MNT_ID, &sx) == 0) {
    o[0] = makedev(sx.stx_dev_major, sx.stx_dev_minor);
    o[1] = sx.stx_ino;
    o[2] = sx.stx_nlink;
    o[3] = sx.stx_mode;
    o[4] = sx.stx_uid;
    o[5] = sx.stx_gid;
    o[6] = makedev(sx.stx_rdev_major, sx.stx_rdev_minor);
    o[7] = sx.stx_size;
    o[8] = sx.stx_blksize;
    o[9] = sx.stx_blocks;
    // Seconds are signed; the slots carry their two's-complement bit pattern.
    o[10] = static_cast<uint64_t>(sx.stx_atime.tv_sec);
    o[11] = sx.stx_atime.tv_nsec;
    o[12] = static_cast<uint64_t>(sx.stx_mtime.tv_sec);
    o[13] = sx.stx_mtime.tv_nsec;
    o[14] = static_cast<uint64_t>(sx.stx_ctime.tv_sec);
    o[15] = sx.stx_ctime.tv_nsec;
    o[16] = (sx.stx_mask & STATX_MNT_ID) ? sx.stx_mnt_id : 0;
    return 0;
  }
  if (errno != ENOSYS) return -errno;
  // Kernel (or seccomp filter) without statx: fstatat takes only these flags.
  struct stat st {};
  int ff = static_cast<int>(flags) & (AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT);
  if (fstatat(dirfd, cpath, &st, ff) < 0) return -errno;
  o[0] = st.st_dev;
  o[1] = st.st_ino;
  o[2] = st.st_nlink;
  o[3] = st.st_mode;
  o[4] = st.st_uid;
  o[5] = st.st_gid;
  o[6] = st.st_rdev;
  o[7] = static_cast<uint64_t>(st.st_size);
  o[8] = static_cast<uint64_t>(st.st_blksize);
  o[9] = static_cast<uint64_t>(st.st_blocks);
  o[10] = static_cast<uint64_t>(st.st_atim.tv_sec);
  o[11] = static_cast<uint64_t>(st.st_atim.tv_nsec);
  o[12] = static_cast<uint64_t>(st.st_mtim.tv_sec);
  o[13] = static_cast<uint64_t>(st.st_mtim.tv_nsec);
  o[14] = static_cast<uint64_t>(st.st_ctim.tv_sec);
  o[15] = static_cast<uint64_t>(st.st_ctim.tv_nsec);
  o[16] = 0;
  return 0;
}

Napi::Value Stat(const Napi::CallbackInfo& info) {
  Args a(info, "stat");
  int dirfd = a.Int(0);
  std::string path = a.Str(1);
  uint32_t flags = a.Flags(2);
  auto out = a.Typed<uint64_t, napi_biguint64_array>(3, "a BigUint64Array", 17);
  VFS_CHECK(a);
  return Num(a.Env(), DoStat(dirfd, path.c_str(), flags, out.Data()));
}

// stat(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, out) without a path string to convert: the
// hot GETATTR / LOOKUP form.
Napi::Value StatFd(const Napi::CallbackInfo& info) {
  Args a(info, "statFd");
  int fd = a.Int(0);
  auto out = a.Typed<uint64_t, napi_biguint64_array>(1, "a BigUint64Array", 17);
  VFS_CHECK(a);
  return Num(a.Env(), DoStat(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, out.Data()));
}

Napi::Value Mkdirat(const Napi::CallbackInfo& info) {
  Args a(info, "mkdirat");
  int dirfd = a.Int(0);
  std::string path = a.Str(1);
  uint32_t mode = a.Flags(2);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(mkdirat(dirfd, path.c_str(), mode)));
}

Napi::Value Mknodat(const Napi::CallbackInfo& info) {
  Args a(info, "mknodat");
  int dirfd = a.Int(0);
  std::string path = a.Str(1);
  uint32_t mode = a.Flags(2);
  uint32_t dev = a.Flags(3);
  VFS_CHECK(a);
  // FUSE carries the kernel's 32-bit new_encode_dev() form (12-bit major, 20-bit minor split
  // around it); glibc's dev_t packs differently above minor 255, so decode and re-pack.
  unsigned major = (dev & 0xfff00u) >> 8;
  unsigned minor = (dev & 0xffu) | ((dev >> 12) & 0xfff00u);
  return Num(a.Env(), SysRet(mknodat(dirfd, path.c_str(), mode, makedev(major, minor))));
}

Napi::Value Symlinkat(const Napi::CallbackInfo& info) {
  Args a(info, "symlinkat");
  std::string target = a.Str(0);
  int dirfd = a.Int(1);
  std::string path = a.Str(2);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(symlinkat(target.c_str(), dirfd, path.c_str())));
}

Napi::Value Readlinkat(const Napi::CallbackInfo& info) {
  Args a(info, "readlinkat");
  int dirfd = a.Int(0);
  std::string path = a.Str(1);
  auto buf = a.U8(2);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(readlinkat(dirfd, path.c_str(), reinterpret_cast<char*>(buf.Data()), buf.ByteLength())));
}

Napi::Value Unlinkat(const Napi::CallbackInfo& info) {
  Args a(info, "unlinkat");
  int dirfd = a.Int(0);
  std::string path = a.Str(1);
  uint32_t flags = a.Flags(2);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(unlinkat(dirfd, path.c_str(), static_cast<int>(flags))));
}

Napi::Value Renameat2(const Napi::CallbackInfo& info) {
  Args a(info, "renameat2");
  int olddirfd = a.Int(0);
  std::string oldpath = a.Str(1);
  int newdirfd = a.Int(2);
  std::string newpath = a.Str(3);
  uint32_t flags = a.Flags(4);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(renameat2(olddirfd, oldpath.c_str(), newdirfd, newpath.c_str(), flags)));
}

Napi::Value Linkat(const Napi::CallbackInfo& info) {
  Args a(info, "linkat");
  int olddirfd = a.Int(0);
  std::string oldpath = a.Str(1);
  int newdirfd = a.Int(2);
  std::string newpath = a.Str(3);
  uint32_t flags = a.Flags(4);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(linkat(olddirfd, oldpath.c_str(), newdirfd, newpath.c_str(), static_cast<int>(flags))));
}

Napi::Value Fchownat(const Napi::CallbackInfo& info) {
  Args a(info, "fchownat");
  int dirfd = a.Int(0);
  std::string path = a.Str(1);
  uint32_t uid = a.Id(2);
  uint32_t gid = a.Id(3);
  uint32_t flags = a.Flags(4);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(fchownat(dirfd, path.c_str(), uid, gid, static_cast<int>(flags))));
}

Napi::Value Fchmodat(const Napi::CallbackInfo& info) {
  Args a(info, "fchmodat");
  int dirfd = a.Int(0);
  std::string path = a.Str(1);
  uint32_t mode = a.Flags(2);
  uint32_t flags = a.Flags(3);
  VFS_CHECK(a);
  if (flags == 0) return Num(a.Env(), SysRet(fchmodat(dirfd, path.c_str(), mode, 0)));
  // Flags (AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW) are only honoured by fchmodat2 (Linux 6.6);
  // older kernels get glibc's fchmodat, which emulates AT_SYMLINK_NOFOLLOW only.
  long r = syscall(SYS_fchmodat2, dirfd, path.c_str(), mode, flags);
  if (r < 0 && errno == ENOSYS) r = fchmodat(dirfd, path.c_str(), mode, static_cast<int>(flags));
  return Num(a.Env(), SysRet(r));
}

Napi::Value Utimensat(const Napi::CallbackInfo& info) {
  Args a(info, "utimensat");
  int dirfd = a.Int(0);
  std::string path = a.Str(1);
  timespec ts[2];
  ts[0].tv_sec = a.I64(2, -kMaxSafe, kMaxSafe);
  ts[0].tv_nsec = a.I64(3, 0, UTIME_NOW);  // UTIME_OMIT < UTIME_NOW; the kernel checks the rest
  ts[1].tv_sec = a.I64(4, -kMaxSafe, kMaxSafe);
  ts[1].tv_nsec = a.I64(5, 0, UTIME_NOW);
  uint32_t flags = a.Flags(6);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(utimensat(dirfd, path.c_str(), ts, static_cast<int>(flags))));
}

Napi::Value NameToHandleAt(const Napi::CallbackInfo& info) {
  Args a(info, "nameToHandleAt");
  int dirfd = a.Int(0);
  std::string path = a.Str(1);
  uint32_t flags = a.Flags(2);
  auto out = a.U8(3, kHandleHdr + MAX_HANDLE_SZ);
  VFS_CHECK(a);
  Handle h{};
  h.fh()->handle_bytes = MAX_HANDLE_SZ;
  int mountId = 0;
  if (name_to_handle_at(dirfd, path.c_str(), h.fh(), &mountId, static_cast<int>(flags)) < 0)
    return Num(a.Env(), -errno);
  uint8_t* o = out.Data();
  uint32_t mid = static_cast<uint32_t>(mountId);
  uint32_t bytes = h.fh()->handle_bytes;
  int32_t type = h.fh()->handle_type;
  if (bytes > MAX_HANDLE_SZ) return Num(a.Env(), -EOVERFLOW);  // cannot happen; keeps the copy bounded
  std::memcpy(o, &mid, 4);
  std::memcpy(o + 4, &bytes, 4);
  std::memcpy(o + 8, &type, 4);
  std::memcpy(o + kHandleHdr, h.bytes(), bytes);
  return Num(a.Env(), static_cast<int64_t>(kHandleHdr + bytes));
}

Napi::Value OpenByHandleAt(const Napi::CallbackInfo& info) {
  Args a(info, "openByHandleAt");
  int mountFd = a.Int(0);
  auto in = a.U8(1);
  uint32_t flags = a.Flags(2);
  VFS_CHECK(a);
  if (in.ByteLength() < kHandleHdr) return Num(a.Env(), -EINVAL);
  const uint8_t* p = in.Data();
  uint32_t bytes;
  int32_t type;
  std::memcpy(&bytes, p + 4, 4);
  std::memcpy(&type, p + 8, 4);
  if (bytes > MAX_HANDLE_SZ || kHandleHdr + bytes > in.ByteLength()) return Num(a.Env(), -EINVAL);
  Handle h{};
  h.fh()->handle_bytes = bytes;
  h.fh()->handle_type = type;
  std::memcpy(h.bytes(), p + kHandleHdr, bytes);
  return Num(a.Env(), SysRet(VFS_RETRY(open_by_handle_at(mountFd, h.fh(), static_cast<int>(flags)))));
}

}  // namespace

void InitPath(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "openat", Openat);
  Export(env, exports, "openat2", Openat2);
  Export(env, exports, "stat", Stat);
  Export(env, exports, "statFd", StatFd);
  Export(env, exports, "mkdirat", Mkdirat);
  Export(env, exports, "mknodat", Mknodat);
  Export(env, exports, "symlinkat", Symlinkat);
  Export(env, exports, "readlinkat", Readlinkat);
  Export(env, exports, "unlinkat", Unlinkat);
  Export(env, exports, "renameat2", Renameat2);
  Export(env, exports, "linkat", Linkat);
  Export(env, exports, "fchownat", Fchownat);
  Export(env, exports, "fchmodat", Fchmodat);
  Export(env, exports, "utimensat", Utimensat);
  Export(env, exports, "nameToHandleAt", NameToHandleAt);
  Export(env, exports, "openByHandleAt", OpenByHandleAt);
}

}  // namespace vfs
