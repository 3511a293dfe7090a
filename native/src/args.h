// Argument checking shared by every export.
// Convention (src/native/binding.ts): a JS value of the wrong type is misuse and throws TypeError;
// a value of the right type that the syscall cannot take (NaN, out of range, embedded NUL) makes
// the export return -EINVAL. Nothing here throws a C++ exception (NAPI_DISABLE_CPP_EXCEPTIONS).
#pragma once

#include <napi.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace vfs {

// 2^53: the largest integer a JS number carries exactly (the contract's "safe" offsets).
constexpr int64_t kMaxSafe = int64_t{1} << 53;

// -1/errno syscall style -> the contract's "value or -errno".
inline int64_t SysRet(int64_t r) { return r < 0 ? -static_cast<int64_t>(errno) : r; }

inline Napi::Value Num(Napi::Env env, int64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* fn) : info_(info), fn_(fn) {}

  Napi::Env Env() const { return info_.Env(); }
  bool Bad() const { return typeError_ || einval_; }
  // What an export returns once Bad(): undefined with a pending TypeError, or -EINVAL.
  Napi::Value Fail() const { return typeError_ ? Env().Undefined() : Num(Env(), -EINVAL); }
  // Flag a wrong value found by the export itself (e.g. a length larger than the buffer).
  void Invalid() { einval_ = true; }

  // int32 (fds, whence, small enums). AT_FDCWD (-100) is an ordinary value here.
  int32_t Int(size_t i) {
    double d;
    if (!Integer(i, "an integer", &d)) return 0;
    if (d < INT32_MIN || d > INT32_MAX) return Invalid(), 0;
    return static_cast<int32_t>(d);
  }

  // Flag words and modes: int32 or its unsigned bit pattern (x >>> 0).
  uint32_t Flags(size_t i) {
    double d;
    if (!Integer(i, "an integer", &d)) return 0;
    if (d < INT32_MIN || d > UINT32_MAX) return Invalid(), 0;
    return d < 0 ? static_cast<uint32_t>(static_cast<int32_t>(d)) : static_cast<uint32_t>(d);
  }

  // uid/gid: 0..2^32-1, or -1 meaning (uid_t)-1 ("leave unchanged" / "query").
  uint32_t Id(size_t i) {
    double d;
    if (!Integer(i, "an integer", &d)) return 0;
    if (d < -1 || d > UINT32_MAX) return Invalid(), 0;
    return d < 0 ? UINT32_MAX : static_cast<uint32_t>(d);
  }

  // Integer in [lo, hi] (hi <= 2^53); offsets, lengths, counters, seconds.
  int64_t I64(size_t i, int64_t lo = 0, int64_t hi = kMaxSafe) {
    double d;
    if (!Integer(i, "an integer", &d)) return 0;
    if (d < static_cast<double>(lo) || d > static_cast<double>(hi)) return Invalid(), 0;
    return static_cast<int64_t>(d);
  }

  bool Bool(size_t i) {
    Napi::Value v = info_[i];
    if (!v.IsBoolean()) return TypeErr(i, "a boolean"), false;
    return v.As<Napi::Boolean>().Value();
  }

  // Strings (paths, xattr names, symlink targets) are "binary": one JS char per byte (latin1), so
  // non-UTF-8 names round-trip. A char above 0xFF cannot be such a byte, and an embedded NUL would
  // silently truncate the C string: both are wrong values.
  std::string Str(size_t i) {
    Napi::Value v = info_[i];
    if (!v.IsString()) return TypeErr(i, "a string"), std::string();
    size_t n = 0;
    napi_get_value_string_utf16(Env(), v, nullptr, 0, &n);
    std::vector<char16_t> u(n + 1);
    napi_get_value_string_utf16(Env(), v, u.data(), u.size(), &n);
    std::string s(n, '\0');
    for (size_t k = 0; k < n; k++) {
      if (u[k] == 0 || u[k] > 0xFF) Invalid();
      s[k] = static_cast<char>(u[k]);
    }
    return s;
  }

  // An exact signed or unsigned 64-bit BigInt, as its 64-bit pattern.
  int64_t Big64(size_t i) {
    Napi::Value v = info_[i];
    if (!v.IsBigInt()) return TypeErr(i, "a bigint"), 0;
    bool lossless = false;
    int64_t x = v.As<Napi::BigInt>().Int64Value(&lossless);
    if (lossless) return x;
    uint64_t ux = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) return Invalid(), 0;
    return static_cast<int64_t>(ux);
  }

  Napi::Function Func(size_t i) {
    Napi::Value v = info_[i];
    if (!v.IsFunction()) return TypeErr(i, "a function"), Napi::Function();
    return v.As<Napi::Function>();
  }

  // A typed array of exactly kind K (a Node Buffer is a Uint8Array) with at least minLen elements.
  // A too-short fixed-layout out array is a programming error, hence TypeError.
  template <typename T, napi_typedarray_type K>
  Napi::TypedArrayOf<T> Typed(size_t i, const char* what, size_t minLen = 0) {
    Napi::Value v = info_[i];
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != K)
      return TypeErr(i, what), Napi::TypedArrayOf<T>();
    auto a = v.As<Napi::TypedArrayOf<T>>();
    if (a.ElementLength() < minLen) return TypeErr(i, what, minLen), Napi::TypedArrayOf<T>();
    return a;
  }

  Napi::Uint8Array U8(size_t i, size_t minLen = 0) {
    return Typed<uint8_t, napi_uint8_array>(i, "a Uint8Array", minLen);
  }

  Napi::Value Raw(size_t i) const { return info_[i]; }

  void TypeErr(size_t i, const char* what, size_t minLen = 0) {
    if (typeError_) return;  // report the first misuse only; one pending exception at a time
    typeError_ = true;
    std::string msg = std::string(fn_) + ": argument " + std::to_string(i) + " must be " + what;
    if (minLen) msg += " of length >= " + std::to_string(minLen);
    Napi::TypeError::New(Env(), msg).ThrowAsJavaScriptException();
  }

 private:
  bool Integer(size_t i, const char* what, double* out) {
    Napi::Value v = info_[i];
    if (!v.IsNumber()) return TypeErr(i, what), false;
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::trunc(d)) return Invalid(), false;
    *out = d;
    return true;
  }

  const Napi::CallbackInfo& info_;
  const char* fn_;
  bool typeError_ = false;
  bool einval_ = false;
};

#define VFS_CHECK(a) \
  do {               \
    if ((a).Bad()) return (a).Fail(); \
  } while (0)

// Retry a syscall expression while it fails with EINTR.
#define VFS_RETRY(expr)                        \
  ({                                           \
    decltype(expr) r_;                         \
    do r_ = (expr);                            \
    while (r_ == -1 && errno == EINTR);        \
    r_;                                        \
  })

using Exporter = void (*)(Napi::Env, Napi::Object);

inline void Export(Napi::Env env, Napi::Object exports, const char* name, Napi::Function::Callback fn) {
  exports.Set(name, Napi::Function::New(env, fn, name));
}

// One per area file; addon.cc calls them all.
void InitSock(Napi::Env env, Napi::Object exports);
void InitPoll(Napi::Env env, Napi::Object exports);
void InitMem(Napi::Env env, Napi::Object exports);
void InitPath(Napi::Env env, Napi::Object exports);
void InitFd(Napi::Env env, Napi::Object exports);
void InitXattr(Napi::Env env, Napi::Object exports);
void InitMisc(Napi::Env env, Napi::Object exports);
void InitSandbox(Napi::Env env, Napi::Object exports);

}  // namespace vfs
