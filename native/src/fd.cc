// Syscalls on an open fd.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "args.h"

namespace vfs {
namespace {

Napi::Value Close(const Napi::CallbackInfo& info) {
  Args a(info, "close");
  int fd = a.Int(0);
  VFS_CHECK(a);
  // Never retried: on Linux the fd is gone even when close reports EINTR.
  return Num(a.Env(), SysRet(close(fd)));
}

Napi::Value Dup(const Napi::CallbackInfo& info) {
  Args a(info, "dup");
  int fd = a.Int(0);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(fcntl(fd, F_DUPFD_CLOEXEC, 0)));
}

Napi::Value Getfl(const Napi::CallbackInfo& info) {
  Args a(info, "getfl");
  int fd = a.Int(0);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(fcntl(fd, F_GETFL)));
}

Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  Args a(info, "ftruncate");
  int fd = a.Int(0);
  int64_t len = a.I64(1);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(VFS_RETRY(ftruncate(fd, len))));
}

Napi::Value Fsync(const Napi::CallbackInfo& info) {
  Args a(info, "fsync");
  int fd = a.Int(0);
  bool datasync = a.Bool(1);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(datasync ? fdatasync(fd) : fsync(fd)));
}

Napi::Value Syncfs(const Napi::CallbackInfo& info) {
  Args a(info, "syncfs");
  int fd = a.Int(0);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(syncfs(fd)));
}

Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  Args a(info, "fallocate");
  int fd = a.Int(0);
  uint32_t mode = a.Flags(1);
  int64_t off = a.I64(2);
  int64_t len = a.I64(3);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(VFS_RETRY(fallocate(fd, static_cast<int>(mode), off, len))));
}

Napi::Value Lseek(const Napi::CallbackInfo& info) {
  Args a(info, "lseek");
  int fd = a.Int(0);
  int64_t off = a.I64(1, -kMaxSafe, kMaxSafe);  // negative is fine for SEEK_CUR/SEEK_END
  int whence = a.Int(2);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(lseek(fd, off, whence)));
}

Napi::Value SeekDir(const Napi::CallbackInfo& info) {
  Args a(info, "seekDir");
  int fd = a.Int(0);
  // getdents64 d_off cookies are opaque 64-bit values (ext4 hashes go past 2^53); a u64 pattern
  // is accepted as the same off_t.
  int64_t off = a.Big64(1);
  VFS_CHECK(a);
  return Num(a.Env(), lseek(fd, off, SEEK_SET) < 0 ? -errno : 0);
}

Napi::Value CopyFileRange(const Napi::CallbackInfo& info) {
  Args a(info, "copyFileRange");
  int fdIn = a.Int(0);
  loff_t offIn = a.I64(1);
  int fdOut = a.Int(2);
  loff_t offOut = a.I64(3);
  int64_t len = a.I64(4);
  uint32_t flags = a.Flags(5);
  VFS_CHECK(a);
  // Offsets go by pointer so the fds' own file positions are neither used nor moved; the
  // caller advances its offsets by the result.
  return Num(a.Env(), SysRet(VFS_RETRY(copy_file_range(fdIn, &offIn, fdOut, &offOut, static_cast<size_t>(len), flags))));
}

Napi::Value Fstatfs(const Napi::CallbackInfo& info) {
  Args a(info, "fstatfs");
  int fd = a.Int(0);
  auto out = a.Typed<uint64_t, napi_biguint64_array>(1, "a BigUint64Array", 8);
  VFS_CHECK(a);
  struct statfs s {};
  if (VFS_RETRY(fstatfs(fd, &s)) < 0) return Num(a.Env(), -errno);
  uint64_t* o = out.Data();
  o[0] = static_cast<uint64_t>(s.f_bsize);
  o[1] = static_cast<uint64_t>(s.f_frsize);
  o[2] = s.f_blocks;
  o[3] = s.f_bfree;
  o[4] = s.f_bavail;
  o[5] = s.f_files;
  o[6] = s.f_ffree;
  o[7] = static_cast<uint64_t>(s.f_namelen);
  return Num(a.Env(), 0);
}

Napi::Value Getdents64(const Napi::CallbackInfo& info) {
  Args a(info, "getdents64");
  int fd = a.Int(0);
  auto buf = a.U8(1);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(getdents64(fd, buf.Data(), buf.ByteLength())));
}

Napi::Value OfdLock(const Napi::CallbackInfo& info) {
  Args a(info, "ofdLock");
  int fd = a.Int(0);
  int cmd = a.Int(1);
  auto lk = a.Typed<int64_t, napi_bigint64_array>(2, "a BigInt64Array", 5);
  VFS_CHECK(a);
  // The third argument is a struct flock*: any other fcntl command would misread it.
  switch (cmd) {
    case F_OFD_GETLK: case F_OFD_SETLK: case F_OFD_SETLKW:
    case F_GETLK: case F_SETLK: case F_SETLKW:
      break;
    default:
      return Num(a.Env(), -EINVAL);
  }
  int64_t* l = lk.Data();
  struct flock fl {};
  fl.l_type = static_cast<short>(l[0]);
  fl.l_whence = static_cast<short>(l[1]);
  fl.l_start = l[2];
  fl.l_len = l[3];
  fl.l_pid = static_cast<pid_t>(l[4]);
  // Not retried: EINTR is how a blocked SETLKW gets interrupted.
  if (fcntl(fd, cmd, &fl) < 0) return Num(a.Env(), -errno);
  l[0] = fl.l_type;
  l[1] = fl.l_whence;
  l[2] = fl.l_start;
  l[3] = fl.l_len;
  l[4] = fl.l_pid;
  return Num(a.Env(), 0);
}

Napi::Value Flock(const Napi::CallbackInfo& info) {
  Args a(info, "flock");
  int fd = a.Int(0);
  int op = a.Int(1);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(flock(fd, op)));
}

Napi::Value Pread(const Napi::CallbackInfo& info) {
  Args a(info, "pread");
  int fd = a.Int(0);
  auto buf = a.U8(1);
  int64_t off = a.I64(2);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(VFS_RETRY(pread(fd, buf.Data(), buf.ByteLength(), off))));
}

Napi::Value Pwrite(const Napi::CallbackInfo& info) {
  Args a(info, "pwrite");
  int fd = a.Int(0);
  auto buf = a.U8(1);
  int64_t off = a.I64(2);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(VFS_RETRY(pwrite(fd, buf.Data(), buf.ByteLength(), off))));
}

}  // namespace

void InitFd(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "close", Close);
  Export(env, exports, "dup", Dup);
  Export(env, exports, "getfl", Getfl);
  Export(env, exports, "ftruncate", Ftruncate);
  Export(env, exports, "fsync", Fsync);
  Export(env, exports, "syncfs", Syncfs);
  Export(env, exports, "fallocate", Fallocate);
  Export(env, exports, "lseek", Lseek);
  Export(env, exports, "seekDir", SeekDir);
  Export(env, exports, "copyFileRange", CopyFileRange);
  Export(env, exports, "fstatfs", Fstatfs);
  Export(env, exports, "getdents64", Getdents64);
  Export(env, exports, "ofdLock", OfdLock);
  Export(env, exports, "flock", Flock);
  Export(env, exports, "pread", Pread);
  Export(env, exports, "pwrite", Pwrite);
}

}  // namespace vfs
