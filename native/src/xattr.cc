// Extended attributes. Path forms follow symlinks unless nofollow (l*xattr); O_PATH fds reach
// here as /proc/self/fd/N paths because f*xattr refuses them.
#include <sys/xattr.h>

#include "args.h"

namespace vfs {
namespace {

// A zero-length buffer is a size probe: pass NULL/0 as the kernel expects.
inline char* Ptr(Napi::Uint8Array& b) { return b.ByteLength() ? reinterpret_cast<char*>(b.Data()) : nullptr; }

Napi::Value Getxattr(const Napi::CallbackInfo& info) {
  Args a(info, "getxattr");
  std::string path = a.Str(0);
  std::string name = a.Str(1);
  auto buf = a.U8(2);
  bool nofollow = a.Bool(3);
  VFS_CHECK(a);
  ssize_t r = nofollow ? lgetxattr(path.c_str(), name.c_str(), Ptr(buf), buf.ByteLength())
                       : getxattr(path.c_str(), name.c_str(), Ptr(buf), buf.ByteLength());
  return Num(a.Env(), SysRet(r));
}

Napi::Value Setxattr(const Napi::CallbackInfo& info) {
  Args a(info, "setxattr");
  std::string path = a.Str(0);
  std::string name = a.Str(1);
  auto val = a.U8(2);
  uint32_t flags = a.Flags(3);
  bool nofollow = a.Bool(4);
  VFS_CHECK(a);
  int f = static_cast<int>(flags);
  int r = nofollow ? lsetxattr(path.c_str(), name.c_str(), Ptr(val), val.ByteLength(), f)
                   : setxattr(path.c_str(), name.c_str(), Ptr(val), val.ByteLength(), f);
  return Num(a.Env(), SysRet(r));
}

Napi::Value Listxattr(const Napi::CallbackInfo& info) {
  Args a(info, "listxattr");
  std::string path = a.Str(0);
  auto buf = a.U8(1);
  bool nofollow = a.Bool(2);
  VFS_CHECK(a);
  ssize_t r = nofollow ? llistxattr(path.c_str(), Ptr(buf), buf.ByteLength())
                       : listxattr(path.c_str(), Ptr(buf), buf.ByteLength());
  return Num(a.Env(), SysRet(r));
}

Napi::Value Removexattr(const Napi::CallbackInfo& info) {
  Args a(info, "removexattr");
  std::string path = a.Str(0);
  std::string name = a.Str(1);
  bool nofollow = a.Bool(2);
  VFS_CHECK(a);
  int r = nofollow ? lremovexattr(path.c_str(), name.c_str()) : removexattr(path.c_str(), name.c_str());
  return Num(a.Env(), SysRet(r));
}

Napi::Value Fgetxattr(const Napi::CallbackInfo& info) {
  Args a(info, "fgetxattr");
  int fd = a.Int(0);
  std::string name = a.Str(1);
  auto buf = a.U8(2);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(fgetxattr(fd, name.c_str(), Ptr(buf), buf.ByteLength())));
}

Napi::Value Fsetxattr(const Napi::CallbackInfo& info) {
  Args a(info, "fsetxattr");
  int fd = a.Int(0);
  std::string name = a.Str(1);
  auto val = a.U8(2);
  uint32_t flags = a.Flags(3);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(fsetxattr(fd, name.c_str(), Ptr(val), val.ByteLength(), static_cast<int>(flags))));
}

Napi::Value Flistxattr(const Napi::CallbackInfo& info) {
  Args a(info, "flistxattr");
  int fd = a.Int(0);
  auto buf = a.U8(1);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(flistxattr(fd, Ptr(buf), buf.ByteLength())));
}

Napi::Value Fremovexattr(const Napi::CallbackInfo& info) {
  Args a(info, "fremovexattr");
  int fd = a.Int(0);
  std::string name = a.Str(1);
  VFS_CHECK(a);
  return Num(a.Env(), SysRet(fremovexattr(fd, name.c_str())));
}

}  // namespace

void InitXattr(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "getxattr", Getxattr);
  Export(env, exports, "setxattr", Setxattr);
  Export(env, exports, "listxattr", Listxattr);
  Export(env, exports, "removexattr", Removexattr);
  Export(env, exports, "fgetxattr", Fgetxattr);
  Export(env, exports, "fsetxattr", Fsetxattr);
  Export(env, exports, "flistxattr", Flistxattr);
  Export(env, exports, "fremovexattr", Fremovexattr);
}

}  // namespace vfs
