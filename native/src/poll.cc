// fd readiness on Node's own libuv loop (uv_poll_t), so kick/call eventfds and the vhost-user
// socket need no threads.
#include <uv.h>

#include <optional>

#include "args.h"

namespace vfs {
namespace {

// Marks the Externals pollStart hands out, so pollStop cannot be fed some other External.
const napi_type_tag kPollTag = {0x766972746f667331ULL, 0x706f6c6c68616e64ULL};

// Owned jointly by the libuv handle (until its close callback) and the JS External (until its
// finalizer); freed when both are done, so neither can see a dangling pointer.
struct Poller {
  uv_poll_t handle;
  napi_env env;
  Napi::FunctionReference cb;
  std::optional<Napi::AsyncContext> ctx;
  bool active = false;   // uv handle initialised and not yet closed
  bool uvLive = false;   // close callback still to come
  bool jsLive = true;    // External not yet finalized
  bool inCallback = false;
};

// The JS references go as soon as the watcher stops, but not while the callback that may have
// called pollStop is still running on them.
void ReleaseJs(Poller* p) {
  p->cb.Reset();
  p->ctx.reset();
}

void MaybeFree(Poller* p) {
  if (!p->uvLive && !p->jsLive) delete p;
}

void OnClose(uv_handle_t* h) {
  Poller* p = static_cast<Poller*>(h->data);
  p->uvLive = false;
  MaybeFree(p);
}

void CleanupHook(void* arg);

// JS references are dropped here rather than in the close callback, which may run after the env
// is gone (worker teardown), where touching napi would be unsafe.
void Stop(Poller* p, bool fromHook) {
  if (!p->active) return;
  p->active = false;
  if (!fromHook) napi_remove_env_cleanup_hook(p->env, CleanupHook, p);
  if (!p->inCallback) ReleaseJs(p);
  uv_poll_stop(&p->handle);
  uv_close(reinterpret_cast<uv_handle_t*>(&p->handle), OnClose);
}

// Env teardown (worker exit, process exit): a still-running watcher would otherwise keep a
// uv handle open past the loop's close.
void CleanupHook(void* arg) { Stop(static_cast<Poller*>(arg), true); }

void OnPoll(uv_poll_t* h, int status, int events) {
  Poller* p = static_cast<Poller*>(h->data);
  if (!p->active) return;
  Napi::Env env(p->env);
  Napi::HandleScope scope(env);
  // MakeCallback (not Call): we enter JS from the loop, so async hooks, nextTicks and
  // microtasks must run as for any other libuv-driven callback.
  // napi_make_callback wants an object receiver; the global object stands in for `undefined`.
  p->inCallback = true;
  p->cb.MakeCallback(env.Global(), {Napi::Number::New(env, status), Napi::Number::New(env, events)},
                     *p->ctx);
  p->inCallback = false;
  // napi leaves a thrown exception pending on the env; nobody above us would see it, so
  // re-raise it as an uncaught exception (process 'uncaughtException', default: crash).
  if (env.IsExceptionPending()) {
    Napi::Error err = env.GetAndClearPendingException();
    napi_fatal_exception(env, err.Value());
  }
  // p is still valid: its close callback cannot run before we return to libuv.
  if (!p->active) ReleaseJs(p);
}

void FinalizePoller(Napi::Env, Poller* p) {
  p->jsLive = false;
  MaybeFree(p);
}

Napi::Value PollStart(const Napi::CallbackInfo& info) {
  Args a(info, "pollStart");
  int fd = a.Int(0);
  int events = a.Int(1);
  Napi::Function cb = a.Func(2);
  VFS_CHECK(a);
  // uv_poll_start asserts on unknown bits; turn that into an error result.
  if (fd < 0 || (events & ~(UV_READABLE | UV_WRITABLE | UV_DISCONNECT | UV_PRIORITIZED)) != 0)
    return Num(a.Env(), -EINVAL);
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(a.Env(), &loop) != napi_ok || !loop) return Num(a.Env(), -EINVAL);

  auto* p = new Poller();
  p->env = a.Env();
  p->handle.data = p;
  // Note: uv_poll_init puts fd in O_NONBLOCK mode and refuses an fd already watched (EEXIST).
  int r = uv_poll_init(loop, &p->handle, fd);
  if (r < 0) {
    delete p;  // nothing registered with the loop yet
    return Num(a.Env(), r);
  }
  p->active = true;
  p->uvLive = true;
  p->cb = Napi::Persistent(cb);
  p->ctx.emplace(a.Env(), "virtiofs.poll");
  napi_add_env_cleanup_hook(p->env, CleanupHook, p);
  r = uv_poll_start(&p->handle, events, OnPoll);
  if (r < 0) {
    Stop(p, false);  // closes the handle; the close callback frees (no External owns it)
    p->jsLive = false;
    return Num(a.Env(), r);
  }
  auto ext = Napi::External<Poller>::New(a.Env(), p, FinalizePoller);
  ext.TypeTag(&kPollTag);
  return ext;
}

Napi::Value PollStop(const Napi::CallbackInfo& info) {
  Args a(info, "pollStop");
  Napi::Value v = a.Raw(0);
  if (!v.IsExternal() || !v.As<Napi::External<Poller>>().CheckTypeTag(&kPollTag))
    a.TypeErr(0, "a PollHandle from pollStart");
  VFS_CHECK(a);
  Stop(v.As<Napi::External<Poller>>().Data(), false);
  return a.Env().Undefined();
}

}  // namespace

void InitPoll(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "pollStart", PollStart);
  Export(env, exports, "pollStop", PollStop);
}

}  // namespace vfs
