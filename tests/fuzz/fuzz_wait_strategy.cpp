// Fuzz target: bus::shm::parse_wait_strategy (config and command-line text).
// Properties: no crash or UB on any text; an accepted strategy has spin_ns <= 10 s, prints with
// to_string and parses back to the same strategy; a refused one says why.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "shm/wait.hpp"

using namespace bus;
using namespace bus::shm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);  // exactly sized for ASan
  auto ws = parse_wait_strategy(text);
  if (!ws) {
    FUZZ_CHECK(ws.error().code() == Errc::InvalidArgument && !ws.error().message().empty());
    return 0;
  }
  FUZZ_CHECK(ws->kind == WaitKind::Spin || ws->kind == WaitKind::Yield ||
             ws->kind == WaitKind::Adaptive || ws->kind == WaitKind::Block);
  FUZZ_CHECK(ws->spin_ns <= 10'000'000'000ull);
  FUZZ_CHECK(ws->kind == WaitKind::Adaptive || ws->spin_ns == 0);
  const std::string printed = to_string(*ws);
  auto again = parse_wait_strategy(printed);
  FUZZ_CHECK(again.has_value());
  FUZZ_CHECK(again->kind == ws->kind && again->spin_ns == ws->spin_ns);
  FUZZ_CHECK(to_string(*again) == printed);
  return 0;
}
