// busctl's output helpers (agents/busctl/format.hpp).
#include <catch2/catch.hpp>

#include "format.hpp"

using namespace bus::ctl;

TEST_CASE("human units", "[counters][busctl]") {
  CHECK(human_count(0) == "0");
  CHECK(human_count(999) == "999");
  CHECK(human_count(1000) == "1.0k");
  CHECK(human_count(1234) == "1.2k");
  CHECK(human_count(99'949) == "99.9k");
  CHECK(human_count(123'456) == "123k");
  CHECK(human_count(999'499) == "999k");
  CHECK(human_count(999'999) == "1.0M");
  CHECK(human_count(1'234'567) == "1.2M");
  CHECK(human_count(UINT64_MAX) == "18.4E");
  CHECK(human_bytes(512) == "512B");
  CHECK(human_bytes(1024) == "1.0KiB");
  CHECK(human_bytes(1536) == "1.5KiB");
  CHECK(human_bytes(987'654'321) == "942MiB");
  CHECK(human_bytes(1ull << 40) == "1.0TiB");
  CHECK(human_bytes(UINT64_MAX) == "16.0EiB");
  CHECK(human_duration(0) == "0ms");
  CHECK(human_duration(850'000'000) == "850ms");
  CHECK(human_duration(12'345'000'000) == "12.3s");
  CHECK(human_duration(303'000'000'000) == "5m03s");
  CHECK(human_duration(3'723'000'000'000) == "1h02m");
  CHECK(human_duration(273'600'000'000'000) == "3d04h");
}

TEST_CASE("strings for terminals and for JSON", "[counters][busctl]") {
  CHECK(printable("planner") == "planner");
  CHECK(printable("caf\xC3\xA9") == "caf\xC3\xA9");
  CHECK(printable("a\x1b[31mred\n") == "a?[31mred?");
  CHECK(printable("bad\xFF\xC3") == "bad??");
  CHECK(json_string("plain") == "\"plain\"");
  CHECK(json_string("q\"b\\s/") == "\"q\\\"b\\\\s/\"");
  CHECK(json_string("\n\t\x01\x7f") == "\"\\n\\t\\u0001\\u007f\"");
  CHECK(json_string("caf\xC3\xA9") == "\"caf\xC3\xA9\"");
  CHECK(json_string("x\xFFy") == "\"x\\ufffdy\"");
  CHECK(json_string("\xED\xA0\x80") == "\"\\ufffd\\ufffd\\ufffd\"");  // a surrogate is not UTF-8
  CHECK(json_string("\xC0\xAF") == "\"\\ufffd\\ufffd\"");              // overlong
}

TEST_CASE("tables align columns by code points", "[counters][busctl]") {
  Table t({{"ID", Table::Align::Right}, {"NAME", Table::Align::Left}, {"N", Table::Align::Right}});
  t.row({"7", "caf\xC3\xA9", "12"});
  t.row({"123", "x", "3"});
  CHECK(t.render() ==
        " ID  NAME   N\n"
        "  7  caf\xC3\xA9  12\n"
        "123  x      3\n");
}

TEST_CASE("JSON objects", "[counters][busctl]") {
  CHECK(JsonObject().done() == "{}");
  JsonObject j;
  j.num("a", uint64_t{1}).num("b", int64_t{-2}).str("c", "d").boolean("e", true).raw("f", "[1]");
  CHECK(j.done() == R"({"a": 1, "b": -2, "c": "d", "e": true, "f": [1]})");
}

TEST_CASE("JSON arrays", "[counters][busctl]") {
  CHECK(JsonArray().done() == "[]");
  JsonArray a;
  a.raw(JsonObject().num("a", uint64_t{1}).done()).raw("2");
  CHECK(a.done() == "[{\"a\": 1},\n  2]");
}
