// The parts of the sandbox a running Node process sets up itself (the launcher,
// native/sandbox/vfsd-sandbox.c, does the rest before Node starts): the worker's chroot and its
// post-start lockdown filter, the keeper's no_new_privs and bounding set, and a status query.
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "args.h"

namespace vfs {
namespace {

// {noNewPrivs, seccomp}: prctl(2) PR_GET_NO_NEW_PRIVS and PR_GET_SECCOMP (2 = filter mode), for
// a worker that cannot read /proc/self/status (its /proc holds only /proc/self/fd).
Napi::Value SandboxStatus(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("noNewPrivs", Num(info.Env(), SysRet(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0))));
  o.Set("seccomp", Num(info.Env(), SysRet(prctl(PR_GET_SECCOMP, 0, 0, 0, 0))));
  return o;
}

// chroot into the directory rootFd names, then make cwdFd the working directory. chroot(2) acts
// on the fs_struct all threads share, so it holds for every thread of the process.
Napi::Value ChrootAt(const Napi::CallbackInfo& info) {
  Args a(info, "chrootAt");
  int rootFd = a.Int(0);
  int cwdFd = a.Int(1);
  VFS_CHECK(a);
  if (fchdir(rootFd) < 0 || chroot(".") < 0 || fchdir(cwdFd) < 0) return Num(a.Env(), -errno);
  return Num(a.Env(), 0);
}

// A second seccomp filter, on every thread at once (SECCOMP_FILTER_FLAG_TSYNC): once the worker
// has loaded, execve, execveat and chroot fail with EPERM. The launcher's allowlist has to allow
// execve (it is installed before the worker's own execve), and a chroot-mode worker keeps
// CAP_SYS_CHROOT in threads other than the one that dropped nothing (capabilities are per
// thread): this takes both away. Needs no_new_privs (set by the launcher). 0 or -errno.
Napi::Value Lockdown(const Napi::CallbackInfo& info) {
#if defined(__x86_64__)
  constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
  constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#endif
  constexpr uint32_t kDeny = SECCOMP_RET_ERRNO | EPERM;
  sock_filter prog[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, kDeny),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_execve, 3, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_execveat, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_chroot, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, kDeny),
  };
  sock_fprog fprog = {static_cast<unsigned short>(sizeof prog / sizeof prog[0]), prog};
  long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog);
  // A positive result is the id of a thread that could not be synchronised.
  if (r > 0) return Num(info.Env(), -ESRCH);
  return Num(info.Env(), SysRet(r));
}

// prctl(PR_SET_NO_NEW_PRIVS) for the calling thread (the keeper's main thread, which spawns and
// re-executes; threads and processes it starts from now on inherit it). 0 or -errno.
Napi::Value NoNewPrivs(const Napi::CallbackInfo& info) {
  return Num(info.Env(), SysRet(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)));
}

// prctl(PR_CAPBSET_DROP, cap) for the calling thread: 0, or -errno (EINVAL past the last
// capability the kernel knows).
Napi::Value CapbsetDrop(const Napi::CallbackInfo& info) {
  Args a(info, "capbsetDrop");
  int cap = a.Int(0);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)));
}

}  // namespace

void InitSandbox(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "sandboxStatus", SandboxStatus);
  Export(env, exports, "chrootAt", ChrootAt);
  Export(env, exports, "lockdown", Lockdown);
  Export(env, exports, "noNewPrivs", NoNewPrivs);
  Export(env, exports, "capbsetDrop", CapbsetDrop);
}

}  // namespace vfs
