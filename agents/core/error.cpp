#include "bus/error.hpp"

#include <cerrno>
#include <cstring>

namespace bus {

std::string_view errc_name(Errc code) noexcept {
  if (code < Errc::MIN || code > Errc::MAX) return "Unknown";
  return wire::EnumNameCode(code);
}

std::string Error::message() const {
  std::string out(errc_name(code_));
  if (!detail_.empty()) {
    out += ": ";
    out += detail_;
  }
  return out;
}

Error& Error::context(std::string_view what) {
  std::string d(what);
  if (!detail_.empty()) {
    d += ": ";
    d += detail_;
  }
  detail_ = std::move(d);
  return *this;
}

Error system_error(std::string_view what, int errnum) {
  Errc code = Errc::System;
  switch (errnum) {
    case ENOENT: code = Errc::NotFound; break;
    case EACCES:
    case EPERM: code = Errc::PermissionDenied; break;
    case EEXIST: code = Errc::AlreadyExists; break;
    case EINVAL: code = Errc::InvalidArgument; break;
    case ETIMEDOUT: code = Errc::Timeout; break;
    case EAGAIN: code = Errc::WouldBlock; break;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case ENOSPC: code = Errc::LimitReached; break;
    default: break;
  }
  std::string d(what);
  d += ": ";
  d += std::strerror(errnum);
  return Error(code, std::move(d));
}

}  // namespace bus
