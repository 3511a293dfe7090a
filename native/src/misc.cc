// Credentials and process limits.
#include <sys/fsuid.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "args.h"

namespace vfs {
namespace {

// setfsuid/setfsgid act on the calling thread only, which is the JS thread that then makes
// the syscalls they are meant to cover.
Napi::Value Setfsuid(const Napi::CallbackInfo& info) {
  Args a(info, "setfsuid");
  uint32_t id = a.Id(0);
  VFS_CHECK(a);
  return Num(a.Env(), static_cast<uint32_t>(setfsuid(id)));
}

Napi::Value Setfsgid(const Napi::CallbackInfo& info) {
  Args a(info, "setfsgid");
  uint32_t id = a.Id(0);
  VFS_CHECK(a);
  return Num(a.Env(), static_cast<uint32_t>(setfsgid(id)));
}

Napi::Value RaiseNofile(const Napi::CallbackInfo& info) {
  Args a(info, "raiseNofile");
  int64_t want = a.I64(0);
  VFS_CHECK(a);
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return Num(a.Env(), -errno);
  rlim_t target = static_cast<rlim_t>(want);
  if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max) target = rl.rlim_max;
  // "Raise": never lower a soft limit that is already higher.
  if (target > rl.rlim_cur) {
    rl.rlim_cur = target;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) return Num(a.Env(), -errno);
  }
  return Num(a.Env(), static_cast<int64_t>(rl.rlim_cur));
}

Napi::Value Umask(const Napi::CallbackInfo& info) {
  Args a(info, "umask");
  uint32_t mask = a.Flags(0);
  VFS_CHECK(a);
  return Num(a.Env(), umask(mask & 0777));
}

}  // namespace

void InitMisc(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "setfsuid", Setfsuid);
  Export(env, exports, "setfsgid", Setfsgid);
  Export(env, exports, "raiseNofile", RaiseNofile);
  Export(env, exports, "umask", Umask);
}

}  // namespace vfs
