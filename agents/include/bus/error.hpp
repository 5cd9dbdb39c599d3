// Error handling for the core: codes from one wire-stable list (schemas/errors.fbs) and two
// result types.
//   Result<T>   = tl::expected<T, Errc>   hot paths: a code only, never allocates.
//   Expected<T> = tl::expected<T, Error>  set-up paths: a code plus a detail message that
//                                         callers extend with context ("opening ring: ...").
// Exceptions are used only at set-up and in convenience layers, never across a C ABI.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include <tl/expected.hpp>

#include "errors_generated.h"

namespace bus {

using Errc = wire::Code;

/// Stable name of a code ("WouldBlock"), or "Unknown" for a value outside the list.
[[nodiscard]] std::string_view errc_name(Errc code) noexcept;

class Error {
 public:
  Error(Errc code) noexcept : code_(code) {}  // NOLINT(google-explicit-constructor): Errc converts
  Error(Errc code, std::string detail) : code_(code), detail_(std::move(detail)) {}

  [[nodiscard]] Errc code() const noexcept { return code_; }
  [[nodiscard]] const std::string& detail() const noexcept { return detail_; }

  /// "Corrupt: ring tail 123 is behind head 456"
  [[nodiscard]] std::string message() const;

  /// Prepends what the caller was doing: context("attaching ring") gives
  /// "attaching ring: <detail>". Returns *this for chaining in return statements.
  Error& context(std::string_view what);

  friend bool operator==(const Error& e, Errc c) noexcept { return e.code_ == c; }

 private:
  Errc code_;
  std::string detail_;
};

template <class T>
using Result = tl::expected<T, Errc>;

template <class T>
using Expected = tl::expected<T, Error>;

[[nodiscard]] inline tl::unexpected<Error> fail(Errc code, std::string detail = {}) {
  return tl::unexpected<Error>(Error(code, std::move(detail)));
}

/// An Error for a failed system call: code System (or a closer code for well-known errnos)
/// and "what: strerror(errno)" as its detail.
[[nodiscard]] Error system_error(std::string_view what, int errnum);

}  // namespace bus
