// Syscalls on an open fd.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/statfs.h>
#include <sys/uio.h>
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

// fcntl F_ADD_SEALS / F_GET_SEALS (memfds made with MFD_ALLOW_SEALING).
Napi::Value AddSeals(const Napi::CallbackInfo& info) {
  Args a(info, "addSeals");
  int fd = a.Int(0);
  uint32_t seals = a.Flags(1);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(fcntl(fd, F_ADD_SEALS, static_cast<int>(seals))));
}

Napi::Value GetSeals(const Napi::CallbackInfo& info) {
  Args a(info, "getSeals");
  int fd = a.Int(0);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(fcntl(fd, F_GET_SEALS)));
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

// preadv2/pwritev2 over a JS array of Uint8Arrays (views into guest memory, typically), at an
// explicit offset (the fd's position is neither used nor moved). The iovec lives on the stack
// for up to kStackIov buffers. Anything in the array that is not a Uint8Array is misuse
// (TypeError); more than IOV_MAX buffers is -EINVAL. flags: RWF_* (RWF_NOWAIT = 8: fail with
// -EAGAIN rather than wait for I/O, so a page-cache hit completes inline on the event loop).
constexpr uint32_t kStackIov = 256;

Napi::Value RwV2(const Napi::CallbackInfo& info, bool write) {
  Args a(info, write ? "pwritev2" : "preadv2");
  int fd = a.Int(0);
  Napi::Value list = a.Raw(1);
  int64_t off = a.I64(2);
  uint32_t flags = a.Flags(3);
  if (!list.IsArray()) a.TypeErr(1, "an array of Uint8Array");
  VFS_CHECK(a);
  napi_env env = a.Env();
  uint32_t n = 0;
  if (napi_get_array_length(env, list, &n) != napi_ok) return a.TypeErr(1, "an array of Uint8Array"), a.Fail();
  if (n > IOV_MAX) return Num(env, -EINVAL);
  iovec stackIov[kStackIov];
  std::vector<iovec> heapIov;
  iovec* iov = stackIov;
  if (n > kStackIov) {
    heapIov.resize(n);
    iov = heapIov.data();
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    napi_typedarray_type type;
    size_t len = 0;
    void* data = nullptr;
    // napi_get_typedarray_info fails (napi_invalid_arg) for anything that is not a typed array.
    if (napi_get_element(env, list, i, &e) != napi_ok ||
        napi_get_typedarray_info(env, e, &type, &len, &data, nullptr, nullptr) != napi_ok || type != napi_uint8_array) {
      std::string what = "an array of Uint8Array (element " + std::to_string(i) + " is not one)";
      a.TypeErr(1, what.c_str());
      return a.Fail();
    }
    // data is already adjusted by the view's byteOffset; a detached buffer has length 0.
    iov[i].iov_base = data;
    iov[i].iov_len = len;
  }
  ssize_t r = write ? VFS_RETRY(pwritev2(fd, iov, static_cast<int>(n), off, static_cast<int>(flags)))
                    : VFS_RETRY(preadv2(fd, iov, static_cast<int>(n), off, static_cast<int>(flags)));
  return Num(env, SysRet(r));
}

// The same with the buffers given as `count` (offset, length) pairs of doubles in iov, all in the
// window `win` (one mapping of guest memory): no JS object is read per buffer. A pair outside the
// window, a non-integer, or more pairs than iov holds or than IOV_MAX: -EINVAL.
// Arguments 0-5 of both forms (fd, win, iov, count, offset, flags), read by ReadRanges.
struct Ranges {
  int fd = -1;
  Napi::Uint8Array win;
  Napi::Float64Array iov;
  int64_t count = 0;
  int64_t off = 0;
  uint32_t flags = 0;
};

// False (then check a.Bad() or return -EINVAL) when an argument is wrong or count passes iov.
bool ReadRanges(Args& a, Ranges& r, int64_t minCount) {
  r.fd = a.Int(0);
  r.win = a.U8(1);
  r.iov = a.Typed<double, napi_float64_array>(2, "a Float64Array");
  r.count = a.I64(3, minCount, IOV_MAX);
  r.off = a.I64(4);
  r.flags = a.Flags(5);
  return !a.Bad() && static_cast<size_t>(2 * r.count) <= r.iov.ElementLength();
}

// r's pairs as iovecs into v (count of them); false if a pair is outside the window or not integral.
bool RangesIov(Ranges& r, iovec* v) {
  uint8_t* base = r.win.Data();
  const double size = static_cast<double>(r.win.ByteLength());
  const double* p = r.iov.Data();
  for (int64_t i = 0; i < r.count; i++) {
    const double o = p[2 * i], l = p[2 * i + 1];
    if (!(o >= 0 && l >= 0 && o == std::trunc(o) && l == std::trunc(l) && o + l <= size)) return false;
    v[i].iov_base = base + static_cast<size_t>(o);
    v[i].iov_len = static_cast<size_t>(l);
  }
  return true;
}

Napi::Value RwRanges(const Napi::CallbackInfo& info, bool write) {
  Args a(info, write ? "pwritev2Ranges" : "preadv2Ranges");
  Ranges g;
  const bool ok = ReadRanges(a, g, 0);
  VFS_CHECK(a);
  if (!ok) return Num(a.Env(), -EINVAL);
  iovec stackIov[kStackIov];
  std::vector<iovec> heapIov;
  iovec* v = stackIov;
  if (g.count > kStackIov) {
    heapIov.resize(static_cast<size_t>(g.count));
    v = heapIov.data();
  }
  if (!RangesIov(g, v)) return Num(a.Env(), -EINVAL);
  const int n = static_cast<int>(g.count);
  ssize_t r = write ? VFS_RETRY(pwritev2(g.fd, v, n, g.off, static_cast<int>(g.flags)))
                    : VFS_RETRY(preadv2(g.fd, v, n, g.off, static_cast<int>(g.flags)));
  return Num(a.Env(), SysRet(r));
}

// A preadv2/pwritev2 of ranges in a window, run on the libuv thread pool (the async form of
// RwRanges: the caller hands over `count` pairs instead of a view per buffer, which for a 1 MiB
// request is 256 views Node's fs.readv/writev would each have to look up). The pairs are checked
// and turned into iovecs here, before the call returns, so the caller may reuse iov at once; the
// window is held by a reference until the callback. A short transfer is continued (a short READ
// reads as EOF to the guest, a short WRITE as an error) until done, EOF (0) or an error; the
// callback gets the bytes moved, or -errno if none were.
class RangesWork : public Napi::AsyncWorker {
 public:
  RangesWork(Napi::Function cb, Napi::Uint8Array win, bool write, int fd, std::vector<iovec> v, int64_t off, int flags)
      : Napi::AsyncWorker(cb, write ? "vfs:pwritev2RangesAsync" : "vfs:preadv2RangesAsync"),
        win_(Napi::Persistent(win)), write_(write), fd_(fd), v_(std::move(v)), off_(off), flags_(flags) {}

  void Execute() override {
    size_t first = 0;
    int64_t done = 0;
    while (first < v_.size()) {
      const int n = static_cast<int>(v_.size() - first);
      ssize_t r = write_ ? VFS_RETRY(pwritev2(fd_, &v_[first], n, off_ + done, flags_))
                         : VFS_RETRY(preadv2(fd_, &v_[first], n, off_ + done, flags_));
      if (r < 0) {
        if (done == 0) done = -static_cast<int64_t>(errno);
        break;
      }
      if (r == 0) break;
      done += r;
      // Step over what moved: whole iovecs, then into the first one not finished.
      size_t left = static_cast<size_t>(r);
      while (first < v_.size() && left >= v_[first].iov_len) left -= v_[first++].iov_len;
      if (first < v_.size()) {
        v_[first].iov_base = static_cast<uint8_t*>(v_[first].iov_base) + left;
        v_[first].iov_len -= left;
      }
    }
    result_ = done;
  }

  void OnOK() override {
    win_.Reset();
    Callback().Call({Num(Env(), result_)});
  }

 private:
  Napi::Reference<Napi::Uint8Array> win_;
  const bool write_;
  const int fd_;
  std::vector<iovec> v_;
  const int64_t off_;
  const int flags_;
  int64_t result_ = 0;
};

Napi::Value RwRangesAsync(const Napi::CallbackInfo& info, bool write) {
  Args a(info, write ? "pwritev2RangesAsync" : "preadv2RangesAsync");
  Ranges g;
  const bool ok = ReadRanges(a, g, 1);
  Napi::Function cb = a.Func(6);
  VFS_CHECK(a);
  if (!ok) return Num(a.Env(), -EINVAL);
  std::vector<iovec> v(static_cast<size_t>(g.count));
  if (!RangesIov(g, v.data())) return Num(a.Env(), -EINVAL);
  auto* w = new RangesWork(cb, g.win, write, g.fd, std::move(v), g.off, static_cast<int>(g.flags));
  w->Queue();  // the worker deletes itself after OnOK
  return Num(a.Env(), 0);
}

Napi::Value Fadvise(const Napi::CallbackInfo& info) {
  Args a(info, "fadvise");
  int fd = a.Int(0);
  int64_t off = a.I64(1);
  int64_t len = a.I64(2);
  int advice = a.Int(3);
  VFS_CHECK(a);
  // posix_fadvise returns the error number itself.
  return Num(a.Env(), -static_cast<int64_t>(posix_fadvise(fd, off, len, advice)));
}

Napi::Value Preadv2Ranges(const Napi::CallbackInfo& info) { return RwRanges(info, false); }
Napi::Value Pwritev2Ranges(const Napi::CallbackInfo& info) { return RwRanges(info, true); }

Napi::Value Preadv2(const Napi::CallbackInfo& info) { return RwV2(info, false); }
Napi::Value Pwritev2(const Napi::CallbackInfo& info) { return RwV2(info, true); }

}  // namespace

void InitFd(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "close", Close);
  Export(env, exports, "dup", Dup);
  Export(env, exports, "getfl", Getfl);
  Export(env, exports, "addSeals", AddSeals);
  Export(env, exports, "getSeals", GetSeals);
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
  Export(env, exports, "preadv2", Preadv2);
  Export(env, exports, "pwritev2", Pwritev2);
  Export(env, exports, "preadv2Ranges", Preadv2Ranges);
  Export(env, exports, "fadvise", Fadvise);
  Export(env, exports, "pwritev2Ranges", Pwritev2Ranges);
  Export(env, exports, "preadv2RangesAsync", [](const Napi::CallbackInfo& i) { return RwRangesAsync(i, false); });
  Export(env, exports, "pwritev2RangesAsync", [](const Napi::CallbackInfo& i) { return RwRangesAsync(i, true); });
}

}  // namespace vfs
