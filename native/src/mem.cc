// eventfds, memfds and shared mappings (guest RAM regions arrive as fds to mmap).
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mutex>
#include <unordered_map>

#include "args.h"

namespace vfs {
namespace {

// Node 20 refuses ArrayBuffers above 4 GiB; larger regions are mapped in windows by the caller.
constexpr int64_t kMaxMapLen = int64_t{1} << 32;

// Finalizer hint of every mapping. munmap() finds it through the registry by address (an
// ArrayBuffer cannot hand back its hint), marks it unmapped and detaches the buffer; the
// finalizer then only frees the struct.
struct Mapping {
  void* addr;
  size_t len;
  bool unmapped;
};

std::mutex gMapLock;  // finalizers and exports may come from different envs (workers)
std::unordered_map<void*, Mapping*> gMaps;

void FinalizeMapping(Napi::Env, void*, Mapping* m) {
  {
    std::lock_guard<std::mutex> g(gMapLock);
    if (!m->unmapped) {
      munmap(m->addr, m->len);
      m->unmapped = true;
      auto it = gMaps.find(m->addr);
      if (it != gMaps.end() && it->second == m) gMaps.erase(it);
    }
  }
  delete m;
}

Napi::Value Eventfd(const Napi::CallbackInfo& info) {
  Args a(info, "eventfd");
  uint32_t init = static_cast<uint32_t>(a.I64(0, 0, UINT32_MAX));
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(eventfd(init, EFD_CLOEXEC | EFD_NONBLOCK)));
}

Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  Args a(info, "eventfdRead");
  int fd = a.Int(0);
  VFS_CHECK(a);
  uint64_t v = 0;
  ssize_t n = VFS_RETRY(read(fd, &v, sizeof(v)));
  if (n < 0) return Num(a.Env(), -errno);
  if (n != sizeof(v)) return Num(a.Env(), -EINVAL);  // not an eventfd
  // Counters here are kicks/calls: far below 2^53, so a double is exact.
  return Napi::Number::New(a.Env(), static_cast<double>(v));
}

Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  Args a(info, "eventfdWrite");
  int fd = a.Int(0);
  uint64_t v = static_cast<uint64_t>(a.I64(1));
  VFS_CHECK(a);
  ssize_t n = VFS_RETRY(write(fd, &v, sizeof(v)));
  if (n < 0) return Num(a.Env(), -errno);
  return Num(a.Env(), n == sizeof(v) ? 0 : -EIO);
}

Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Args a(info, "memfdCreate");
  std::string name = a.Str(0);
  uint32_t flags = a.Flags(1);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(memfd_create(name.c_str(), MFD_CLOEXEC | flags)));
}

Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Args a(info, "mmap");
  int fd = a.Int(0);
  int64_t off = a.I64(1);
  int64_t len = a.I64(2, 0, kMaxMapLen);
  VFS_CHECK(a);
  if (len == 0) return Num(a.Env(), -EINVAL);
  void* p = mmap(nullptr, static_cast<size_t>(len), PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(off));
  if (p == MAP_FAILED) return Num(a.Env(), -errno);
  auto* m = new Mapping{p, static_cast<size_t>(len), false};
  {
    std::lock_guard<std::mutex> g(gMapLock);
    gMaps[p] = m;
  }
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(a.Env(), p, m->len, FinalizeMapping, m);
  if (ab.IsEmpty()) {
    // The runtime refused an external buffer (e.g. too large for it): undo, report as errno.
    a.Env().GetAndClearPendingException();
    {
      std::lock_guard<std::mutex> g(gMapLock);
      gMaps.erase(p);
    }
    munmap(p, m->len);
    delete m;
    return Num(a.Env(), -ENOMEM);
  }
  return ab;
}

Napi::Value Munmap(const Napi::CallbackInfo& info) {
  Args a(info, "munmap");
  Napi::Value v = a.Raw(0);
  if (!v.IsArrayBuffer()) a.TypeErr(0, "an ArrayBuffer");
  VFS_CHECK(a);
  auto ab = v.As<Napi::ArrayBuffer>();
  if (ab.IsDetached()) return Num(a.Env(), -EINVAL);  // already unmapped
  {
    std::lock_guard<std::mutex> g(gMapLock);
    auto it = gMaps.find(ab.Data());
    if (it == gMaps.end() || it->second->len != ab.ByteLength()) return Num(a.Env(), -EINVAL);
    Mapping* m = it->second;
    if (munmap(m->addr, m->len) < 0) return Num(a.Env(), -errno);
    m->unmapped = true;  // the finalizer must not unmap whatever reuses this address later
    gMaps.erase(it);
  }
  // After this point m may already be freed (detaching can release the backing store).
  ab.Detach();
  return Num(a.Env(), 0);
}

}  // namespace

void InitMem(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "eventfd", Eventfd);
  Export(env, exports, "eventfdRead", EventfdRead);
  Export(env, exports, "eventfdWrite", EventfdWrite);
  Export(env, exports, "memfdCreate", MemfdCreate);
  Export(env, exports, "mmap", Mmap);
  Export(env, exports, "munmap", Munmap);
}

}  // namespace vfs
