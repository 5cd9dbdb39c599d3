#include <catch2/catch.hpp>

#include <cerrno>

#include "bus/error.hpp"

using namespace bus;

TEST_CASE("error codes have stable names and wire values", "[core]") {
  CHECK(errc_name(Errc::WouldBlock) == "WouldBlock");
  CHECK(errc_name(Errc::NoResponders) == "NoResponders");
  CHECK(errc_name(static_cast<Errc>(60000)) == "Unknown");
  // Wire-stable numbering: these values are on the wire; changing one breaks peers.
  CHECK(static_cast<int>(Errc::Ok) == 0);
  CHECK(static_cast<int>(Errc::WouldBlock) == 1);
  CHECK(static_cast<int>(Errc::Corrupt) == 4);
  CHECK(static_cast<int>(Errc::NoResponders) == 8);
  CHECK(static_cast<int>(Errc::Cancelled) == 17);
}

TEST_CASE("errors carry a message that callers extend with context", "[core]") {
  Error e(Errc::Corrupt, "tail 9 behind head 12");
  CHECK(e.message() == "Corrupt: tail 9 behind head 12");
  e.context("attaching ring");
  CHECK(e.message() == "Corrupt: attaching ring: tail 9 behind head 12");
  CHECK(e == Errc::Corrupt);
  Error bare(Errc::Timeout);
  CHECK(bare.message() == "Timeout");
  CHECK(bare.context("waiting").message() == "Timeout: waiting");
}

TEST_CASE("system errors map errno to a code and keep strerror", "[core]") {
  CHECK(system_error("open /x", ENOENT).code() == Errc::NotFound);
  CHECK(system_error("open /x", EACCES).code() == Errc::PermissionDenied);
  CHECK(system_error("mmap", ENOMEM).code() == Errc::LimitReached);
  const Error e = system_error("ioctl", EIO);
  CHECK(e.code() == Errc::System);
  CHECK_THAT(e.message(), Catch::StartsWith("System: ioctl: "));
}

TEST_CASE("fail() builds an unexpected Error for Expected<T>", "[core]") {
  auto f = []() -> Expected<int> { return fail(Errc::InvalidArgument, "bad"); };
  auto r = f();
  REQUIRE_FALSE(r);
  CHECK(r.error().message() == "InvalidArgument: bad");
}
