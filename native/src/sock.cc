// Unix stream sockets and SCM_RIGHTS fd passing (the vhost-user control channel).
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include "args.h"

namespace vfs {
namespace {

// The cmsg buffer always has room for this many fds so that a peer sending more than the caller
// asked for cannot make us lose (leak into MSG_CTRUNC) the ones we do want.
constexpr size_t kMinRecvFds = 32;
// Kernel limit on fds per SCM_RIGHTS message.
constexpr size_t kMaxSendFds = 253;

// Fill a sockaddr_un; false if the path does not fit (sun_path has no room for it plus NUL).
bool UnixAddr(const std::string& path, sockaddr_un* sa) {
  std::memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(sa->sun_path)) return false;
  std::memcpy(sa->sun_path, path.data(), path.size());
  return true;
}

// A datagram socket's address: a path, or after a leading '@' an abstract name (unix(7)), whose
// length is exactly its bytes (no trailing NUL). False if it does not fit.
bool DgramAddr(const std::string& path, sockaddr_un* sa, socklen_t* len) {
  if (path.empty() || path[0] != '@') {
    if (!UnixAddr(path, sa)) return false;
    *len = sizeof(*sa);
    return true;
  }
  std::memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  if (path.size() < 2 || path.size() > sizeof(sa->sun_path)) return false;
  std::memcpy(sa->sun_path + 1, path.data() + 1, path.size() - 1);
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  return true;
}

// Argument i as a list of fds (a JS Array or a typed array of numbers). False: a TypeError is
// pending, or (a.Bad()) a value no fd can have.
bool FdList(Args& a, size_t i, std::vector<int>* out) {
  Napi::Value fdv = a.Raw(i);
  if (!fdv.IsArray() && !fdv.IsTypedArray()) {
    a.TypeErr(i, "an array of fds");
    return false;
  }
  Napi::Object arr = fdv.As<Napi::Object>();
  uint32_t count = fdv.IsArray() ? fdv.As<Napi::Array>().Length()
                                 : static_cast<uint32_t>(fdv.As<Napi::TypedArray>().ElementLength());
  for (uint32_t k = 0; k < count; k++) {
    Napi::Value v = arr.Get(k);
    if (v.IsEmpty()) return false;  // a getter threw
    if (!v.IsNumber()) {
      a.TypeErr(i, "an array of fds");
      return false;
    }
    double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d <= INT32_MAX && d == std::trunc(d))) {
      a.Invalid();
      return false;
    }
    out->push_back(static_cast<int>(d));
  }
  return true;
}

// Point msg at iov and, when there are fds, at an SCM_RIGHTS control message (in *ctl) carrying them.
void WithRights(msghdr* msg, iovec* iov, const std::vector<int>& fds, std::vector<uint64_t>* ctl) {
  msg->msg_iov = iov;
  msg->msg_iovlen = 1;
  if (fds.empty()) return;
  // uint64_t storage keeps the control buffer aligned for cmsghdr.
  ctl->assign((CMSG_SPACE(fds.size() * sizeof(int)) + 7) / 8, 0);
  msg->msg_control = ctl->data();
  msg->msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
  cmsghdr* c = CMSG_FIRSTHDR(msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
  std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
}

// A nonblocking close-on-exec AF_UNIX socket of type bound to sa (and listening, backlog >= 0).
// fd or -errno.
int BoundSocket(int type, const sockaddr_un& sa, socklen_t salen, int backlog) {
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  if (bind(fd, reinterpret_cast<const sockaddr*>(&sa), salen) < 0 || (backlog >= 0 && listen(fd, backlog) < 0)) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Args a(info, "unixListen");
  std::string path = a.Str(0);
  int backlog = a.Int(1);
  VFS_CHECK(a);
  sockaddr_un sa;
  if (!UnixAddr(path, &sa)) return Num(a.Env(), path.empty() ? -EINVAL : -ENAMETOOLONG);
  return Num(a.Env(), BoundSocket(SOCK_STREAM, sa, sizeof(sa), backlog));
}

Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Args a(info, "unixConnect");
  std::string path = a.Str(0);
  VFS_CHECK(a);
  sockaddr_un sa;
  if (!UnixAddr(path, &sa)) return Num(a.Env(), path.empty() ? -EINVAL : -ENAMETOOLONG);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Num(a.Env(), -errno);
  // Not retried on EINTR: a restarted connect() reports EALREADY/EISCONN instead.
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) < 0) {
    int e = errno;
    close(fd);
    return Num(a.Env(), -e);
  }
  return Num(a.Env(), fd);
}

Napi::Value Accept(const Napi::CallbackInfo& info) {
  Args a(info, "accept");
  int fd = a.Int(0);
  VFS_CHECK(a);
  // accept4 does not inherit O_NONBLOCK from the listener on Linux, so the new fd is blocking.
  return Num(a.Env(), SysRet(VFS_RETRY(accept4(fd, nullptr, nullptr, SOCK_CLOEXEC))));
}

Napi::Value Socketpair(const Napi::CallbackInfo& info) {
  Args a(info, "socketpair");
  auto out = a.Typed<int32_t, napi_int32_array>(0, "an Int32Array", 2);
  // Optional: true for SOCK_SEQPACKET (message boundaries kept, fds ride with their message).
  const bool seqpacket = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
  VFS_CHECK(a);
  int sv[2];
  const int type = seqpacket ? SOCK_SEQPACKET : SOCK_STREAM;
  if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) < 0) return Num(a.Env(), -errno);
  out[0] = sv[0];
  out[1] = sv[1];
  return Num(a.Env(), 0);
}

Napi::Value Recvmsg(const Napi::CallbackInfo& info) {
  Args a(info, "recvmsg");
  int fd = a.Int(0);
  auto buf = a.U8(1);
  auto fds = a.Typed<int32_t, napi_int32_array>(2, "an Int32Array");
  // Optional: receives msg_flags, so that the caller learns of fds the kernel could not install
  // (MSG_CTRUNC: our fd table was full) or that we had to close for want of a slot.
  Napi::TypedArrayOf<int32_t> flagsOut;
  if (info.Length() > 3 && !info[3].IsUndefined()) flagsOut = a.Typed<int32_t, napi_int32_array>(3, "an Int32Array", 1);
  VFS_CHECK(a);
  if (!flagsOut.IsEmpty()) flagsOut[0] = 0;
  const size_t nfds = fds.ElementLength();
  const size_t room = std::max(nfds, kMinRecvFds);
  // uint64_t storage keeps the control buffer aligned for cmsghdr.
  std::vector<uint64_t> ctl((CMSG_SPACE(room * sizeof(int)) + 7) / 8);
  iovec iov{buf.Data(), buf.ByteLength()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl.data();
  msg.msg_controllen = ctl.size() * sizeof(uint64_t);
  ssize_t n = VFS_RETRY(recvmsg(fd, &msg, MSG_CMSG_CLOEXEC));
  for (size_t i = 0; i < nfds; i++) fds[i] = -1;
  if (n < 0) return Num(a.Env(), -errno);
  size_t got = 0;
  int flags = msg.msg_flags;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* p = CMSG_DATA(c);
    for (size_t k = 0; k < count; k++) {
      int rfd;
      std::memcpy(&rfd, p + k * sizeof(int), sizeof(int));
      if (got < nfds) {
        fds[got++] = rfd;
      } else {
        close(rfd);  // the caller has no slot for it; do not leak it
        flags |= MSG_CTRUNC;
      }
    }
  }
  if (!flagsOut.IsEmpty()) flagsOut[0] = flags;
  return Num(a.Env(), n);
}

Napi::Value Sendmsg(const Napi::CallbackInfo& info) {
  Args a(info, "sendmsg");
  int fd = a.Int(0);
  auto buf = a.U8(1);
  int64_t len = a.I64(2, 0, kMaxSafe);
  std::vector<int> out;
  if (!FdList(a, 3, &out)) return a.Bad() ? a.Fail() : a.Env().Undefined();
  VFS_CHECK(a);
  if (static_cast<uint64_t>(len) > buf.ByteLength()) return Num(a.Env(), -EINVAL);
  if (out.size() > kMaxSendFds) return Num(a.Env(), -EINVAL);
  iovec iov{buf.Data(), static_cast<size_t>(len)};
  msghdr msg{};
  std::vector<uint64_t> ctl;
  WithRights(&msg, &iov, out, &ctl);
  // MSG_NOSIGNAL: a vanished peer is an EPIPE result, never a signal.
  return Num(a.Env(), SysRet(VFS_RETRY(sendmsg(fd, &msg, MSG_NOSIGNAL))));
}

// One datagram to the unix datagram socket at path (a leading '@': an abstract name), with fds
// as SCM_RIGHTS, from a socket made for it and closed after: how a service tells its service
// manager about itself (sd_notify(3) documents $NOTIFY_SOCKET this way).
Napi::Value UnixDgramSend(const Napi::CallbackInfo& info) {
  Args a(info, "unixDgramSend");
  std::string path = a.Str(0);
  auto buf = a.U8(1);
  int64_t len = a.I64(2, 0, kMaxSafe);
  std::vector<int> out;
  if (!FdList(a, 3, &out)) return a.Bad() ? a.Fail() : a.Env().Undefined();
  VFS_CHECK(a);
  if (static_cast<uint64_t>(len) > buf.ByteLength() || out.size() > kMaxSendFds) return Num(a.Env(), -EINVAL);
  sockaddr_un sa;
  socklen_t salen;
  if (!DgramAddr(path, &sa, &salen)) return Num(a.Env(), path.size() < 2 ? -EINVAL : -ENAMETOOLONG);
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return Num(a.Env(), -errno);
  iovec iov{buf.Data(), static_cast<size_t>(len)};
  msghdr msg{};
  msg.msg_name = &sa;
  msg.msg_namelen = salen;
  std::vector<uint64_t> ctl;
  WithRights(&msg, &iov, out, &ctl);
  int64_t r = SysRet(VFS_RETRY(sendmsg(s, &msg, MSG_NOSIGNAL)));
  close(s);
  return Num(a.Env(), r);
}

// socket(AF_UNIX, SOCK_DGRAM|SOCK_CLOEXEC|SOCK_NONBLOCK) bound to path (or '@' abstract). fd or -errno.
Napi::Value UnixDgramBind(const Napi::CallbackInfo& info) {
  Args a(info, "unixDgramBind");
  std::string path = a.Str(0);
  VFS_CHECK(a);
  sockaddr_un sa;
  socklen_t salen;
  if (!DgramAddr(path, &sa, &salen)) return Num(a.Env(), path.size() < 2 ? -EINVAL : -ENAMETOOLONG);
  return Num(a.Env(), BoundSocket(SOCK_DGRAM, sa, salen, -1));
}

// kcmp(2) KCMP_FILE of two of our own fds: 0 when both are the same open file description,
// 1..3 when not (the order kcmp gives), -errno when it cannot tell.
Napi::Value KcmpFile(const Napi::CallbackInfo& info) {
  Args a(info, "kcmpFile");
  int fd1 = a.Int(0);
  int fd2 = a.Int(1);
  VFS_CHECK(a);
  pid_t self = getpid();
  return Num(a.Env(), SysRet(syscall(SYS_kcmp, self, self, KCMP_FILE, fd1, fd2)));
}

Napi::Value SetNonblocking(const Napi::CallbackInfo& info) {
  Args a(info, "setNonblocking");
  int fd = a.Int(0);
  bool on = a.Bool(1);
  VFS_CHECK(a);
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return Num(a.Env(), -errno);
  int want = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  if (want != fl && fcntl(fd, F_SETFL, want) < 0) return Num(a.Env(), -errno);
  return Num(a.Env(), 0);
}

}  // namespace

void InitSock(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "unixListen", UnixListen);
  Export(env, exports, "unixConnect", UnixConnect);
  Export(env, exports, "accept", Accept);
  Export(env, exports, "socketpair", Socketpair);
  Export(env, exports, "recvmsg", Recvmsg);
  Export(env, exports, "sendmsg", Sendmsg);
  Export(env, exports, "setNonblocking", SetNonblocking);
  Export(env, exports, "unixDgramSend", UnixDgramSend);
  Export(env, exports, "unixDgramBind", UnixDgramBind);
  Export(env, exports, "kcmpFile", KcmpFile);
}

}  // namespace vfs
