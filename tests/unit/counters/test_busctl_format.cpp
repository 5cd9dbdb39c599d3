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

TEST_CASE("latencies and rates", "[counters][busctl]") {
  CHECK(human_latency(0) == "-");
  CHECK(human_latency(850) == "850ns");
  CHECK(human_latency(12'345) == "12.3\u00b5s");
  CHECK(human_latency(751'109) == "751\u00b5s");
  CHECK(human_latency(99'949) == "99.9\u00b5s");
  CHECK(human_latency(999'499) == "999\u00b5s");
  CHECK(human_latency(999'500) == "1.00ms");  // never "1000µs"
  CHECK(human_latency(9'995'000) == "10.0ms");
  CHECK(human_latency(999'499'999) == "999ms");
  CHECK(human_latency(999'500'000) == "1.00s");
  CHECK(human_latency(1'250'000) == "1.25ms");
  CHECK(human_latency(45'600'000) == "45.6ms");
  CHECK(human_latency(1'500'000'000) == "1.50s");
  CHECK(human_rate(0) == "0");
  CHECK(human_rate(-1) == "0");
  CHECK(human_rate(0.25) == "0.2");
  CHECK(human_rate(4.0) == "4.0");
  CHECK(human_rate(12.4) == "12");
  CHECK(human_rate(1234.0) == "1.2k");
  CHECK(human_rate(1e30) == "18.4E");
  CHECK(human_rate(2048.0, true) == "2.0KiB");
  CHECK(human_rate(0, true) == "0B");
  CHECK(per_second(100, 300, 2'000'000'000) == Approx(100.0));
  CHECK(per_second(100, 100, 1'000'000'000) == 0.0);
  CHECK(per_second(300, 100, 1'000'000'000) == 0.0);  // went down: a reused slot, not a rate
  CHECK(per_second(0, 5, 0) == 0.0);
}

TEST_CASE("durations on the command line", "[counters][busctl]") {
  CHECK(parse_duration("1s") == 1'000'000'000);
  CHECK(parse_duration("3") == 3'000'000'000);
  CHECK(parse_duration("1.5s") == 1'500'000'000);
  CHECK(parse_duration("500ms") == 500'000'000);
  CHECK(parse_duration("250us") == 250'000);
  CHECK(parse_duration("250\u00b5s") == 250'000);
  CHECK(parse_duration("10ns") == 10);
  CHECK(parse_duration("2m") == 120'000'000'000);
  CHECK(parse_duration("1h") == 3'600'000'000'000);
  CHECK(parse_duration("0") == 0);
  CHECK(parse_duration("") == -1);
  CHECK(parse_duration("s") == -1);
  CHECK(parse_duration("1.s") == -1);
  CHECK(parse_duration(".5s") == -1);
  CHECK(parse_duration("1.2.3s") == -1);
  CHECK(parse_duration("-1s") == -1);
  CHECK(parse_duration("1sec") == -1);
  CHECK(parse_duration("soon") == -1);
  CHECK(parse_duration("99999999999h") == -1);  // beyond int64 nanoseconds
}

TEST_CASE("JSON reals and nulls", "[counters][busctl]") {
  JsonObject j;
  j.real("r", 2.5).real("inf", 1.0 / 0.0).null("n");
  CHECK(j.done() == R"({"r": 2.500, "inf": null, "n": null})");
}
