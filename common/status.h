// Errors are values inside hubfs: every fallible call returns Result<T>, carrying either a value
// or an Error (kind, HTTP status, curl code, message). Only the FUSE edge (fs/errno_map.h) turns an
// Error into an errno, through one table. Nothing in here throws.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace hubfs {

enum class ErrorKind : uint8_t {
  kNotFound,        // repo, revision or path does not exist (or is invisible to this token)
  kAccessDenied,    // gated, disabled, or an invalid token
  kIo,              // the origin failed after bounded retries, or answered nonsense
  kTimeout,         // a deadline passed
  kCancelled,       // the caller gave up (FUSE interrupt, shutdown)
  kInvalidArgument, // malformed input from a user (a path the Hub could never have)
  kNoSpace,         // local storage full (cache only; never surfaced to readers)
  kCorrupt,         // a checksum did not match
  kReadOnly,        // a write on a read-only filesystem
  kNotDirectory,
  kIsDirectory,
  kNoAttribute,     // getxattr of a name the inode does not have
};

const char* ErrorKindName(ErrorKind kind);

struct Error {
  ErrorKind kind = ErrorKind::kIo;
  int http_status = 0;  // 0 when no HTTP answer was involved
  int curl_code = 0;    // 0 when curl succeeded
  std::string message;

  std::string ToString() const;
};

inline Error MakeError(ErrorKind kind, std::string message, int http_status = 0, int curl_code = 0) {
  return Error{kind, http_status, curl_code, std::move(message)};
}

// A value or an Error. Small on purpose: ok(), value(), error(), and moves.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

struct Ok {};
using Status = Result<Ok>;
inline Status OkStatus() { return Ok{}; }

}  // namespace hubfs
