// Module entry: each area file registers its own exports.
#include <dlfcn.h>

#include "args.h"

namespace {

// Node dlcloses an addon when the last env that loaded it (e.g. a worker) is freed, but libuv
// may still run our close callbacks (poll.cc) after that. Pin the library for the process
// lifetime so those callbacks never jump into unmapped code.
void PinSelf() {
  Dl_info di{};
  if (dladdr(reinterpret_cast<void*>(&PinSelf), &di) && di.dli_fname)
    dlopen(di.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  PinSelf();
  for (vfs::Exporter init : {vfs::InitSock, vfs::InitPoll, vfs::InitMem, vfs::InitPath, vfs::InitFd,
                             vfs::InitXattr, vfs::InitMisc, vfs::InitSandbox})
    init(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(virtiofs_native, Init)
