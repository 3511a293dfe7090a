// Credentials and process limits.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/fsuid.h>
#include <unistd.h>

#include <string>
#include <vector>
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

// Set RLIMIT_NOFILE's soft limit to exactly `soft` (lower or higher). hard: the hard limit as
// well (the caller cannot raise it back without CAP_SYS_RESOURCE), else the hard limit is only
// raised where soft needs it. The new soft limit or -errno.
Napi::Value SetNofile(const Napi::CallbackInfo& info) {
  Args a(info, "setNofile");
  int64_t soft = a.I64(0, 1);
  bool hard = a.Bool(1);
  VFS_CHECK(a);
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return Num(a.Env(), -errno);
  rl.rlim_cur = static_cast<rlim_t>(soft);
  if (hard || (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max)) rl.rlim_max = rl.rlim_cur;
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0) return Num(a.Env(), -errno);
  return Num(a.Env(), soft);
}

// getgrnam_r(3) (NSS: files, LDAP, ...): the group's gid, or -ENOENT when there is no such group.
Napi::Value Getgrnam(const Napi::CallbackInfo& info) {
  Args a(info, "getgrnam");
  std::string name = a.Str(0);
  VFS_CHECK(a);
  group gr{};
  group* found = nullptr;
  std::vector<char> buf(16384);
  for (;;) {
    int e = getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found);
    if (e == ERANGE && buf.size() < (1u << 22)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (e != 0) return Num(a.Env(), -e);
    return Num(a.Env(), found ? static_cast<int64_t>(gr.gr_gid) : -ENOENT);
  }
}

// Mark every fd >= lowfd close-on-exec: close_range(2) with CLOSE_RANGE_CLOEXEC (Linux 5.11),
// else one fcntl per entry of /proc/self/fd. 0 or -errno.
Napi::Value CloexecFrom(const Napi::CallbackInfo& info) {
  Args a(info, "cloexecFrom");
  int lowfd = a.Int(0);
  VFS_CHECK(a);
  if (lowfd < 0) return Num(a.Env(), -EINVAL);
#ifdef SYS_close_range
  constexpr unsigned kCloseRangeCloexec = 1u << 2;  // CLOSE_RANGE_CLOEXEC (linux/close_range.h)
  if (syscall(SYS_close_range, static_cast<unsigned>(lowfd), ~0u, kCloseRangeCloexec) == 0) return Num(a.Env(), 0);
#endif
  DIR* d = opendir("/proc/self/fd");
  if (!d) return Num(a.Env(), -errno);
  const int self = dirfd(d);
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long fd = strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != 0 || fd < lowfd || fd == self) continue;
    int f = fcntl(static_cast<int>(fd), F_GETFD);
    if (f >= 0 && !(f & FD_CLOEXEC)) fcntl(static_cast<int>(fd), F_SETFD, f | FD_CLOEXEC);
  }
  closedir(d);
  return Num(a.Env(), 0);
}

Napi::Value Umask(const Napi::CallbackInfo& info) {
  Args a(info, "umask");
  uint32_t mask = a.Flags(0);
  VFS_CHECK(a);
  return Num(a.Env(), umask(mask & 0777));
}

// A JS array of strings as a NULL-terminated char* vector (UTF-8); false if it is not one.
bool StringVector(const Napi::Value& v, std::vector<std::string>* out) {
  if (!v.IsArray()) return false;
  Napi::Array arr = v.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value e = arr.Get(i);
    if (!e.IsString()) return false;
    out->push_back(e.As<Napi::String>().Utf8Value());
  }
  return true;
}

// execve(2): replace this process's image, keeping its pid and every fd without FD_CLOEXEC.
// Returns only on failure (-errno). The keeper uses it to upgrade itself in place.
Napi::Value Execve(const Napi::CallbackInfo& info) {
  Args a(info, "execve");
  std::string path = a.Str(0);
  VFS_CHECK(a);
  std::vector<std::string> argv, envp;
  if (info.Length() < 3 || !StringVector(info[1], &argv) || !StringVector(info[2], &envp)) {
    Napi::TypeError::New(info.Env(), "execve: argv and envp must be arrays of strings").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  std::vector<char*> av, ev;
  for (auto& s : argv) av.push_back(s.data());
  av.push_back(nullptr);
  for (auto& s : envp) ev.push_back(s.data());
  ev.push_back(nullptr);
  execve(path.c_str(), av.data(), ev.data());
  return Num(a.Env(), -errno);
}

// Set or clear FD_CLOEXEC (fds handed to a new image must not have it).
Napi::Value SetCloexec(const Napi::CallbackInfo& info) {
  Args a(info, "setCloexec");
  int fd = a.Int(0);
  bool on = a.Bool(1);
  VFS_CHECK(a);
  int f = fcntl(fd, F_GETFD);
  if (f < 0) return Num(a.Env(), -errno);
  f = on ? (f | FD_CLOEXEC) : (f & ~FD_CLOEXEC);
  if (fcntl(fd, F_SETFD, f) < 0) return Num(a.Env(), -errno);
  return Num(a.Env(), 0);
}

// waitpid(pid, WNOHANG): pid once it has exited (and is reaped), 0 while it runs, -errno. For
// a child this image did not spawn (a worker adopted across a keeper re-exec): libuv reaps only
// its own.
Napi::Value Reap(const Napi::CallbackInfo& info) {
  Args a(info, "reap");
  int pid = a.Int(0);
  VFS_CHECK(a);
  if (pid <= 0) return Num(a.Env(), -EINVAL);
  int status = 0;
  pid_t r = VFS_RETRY(waitpid(pid, &status, WNOHANG));
  return Num(a.Env(), r < 0 ? -errno : r);
}

}  // namespace

void InitMisc(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "setfsuid", Setfsuid);
  Export(env, exports, "setfsgid", Setfsgid);
  Export(env, exports, "raiseNofile", RaiseNofile);
  Export(env, exports, "setNofile", SetNofile);
  Export(env, exports, "getgrnam", Getgrnam);
  Export(env, exports, "cloexecFrom", CloexecFrom);
  Export(env, exports, "umask", Umask);
  Export(env, exports, "execve", Execve);
  Export(env, exports, "setCloexec", SetCloexec);
  Export(env, exports, "reap", Reap);
}

}  // namespace vfs
