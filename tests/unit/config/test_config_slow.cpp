// [[slow_consumers]]: the operator's slow-consumer policies, parsed, refused with a clear
// error, round-tripped by render() and reported by reloadable_diff() as taking effect on reload.
#include <catch2/catch.hpp>

#include <string>

#include "config/config.hpp"

using namespace bus::config;

namespace {

std::string error_of(std::string_view doc) {
  auto c = parse(doc, "busd.toml");
  return c ? std::string("(parsed)") : c.error().detail();
}

constexpr std::string_view kRules = R"([[slow_consumers]]
name = "logger-*"
subjects = ["metrics.>", "logs.*.debug"]
policy = "drop-oldest"

[[slow_consumers]]
subjects = [">"]
policy = "disconnect"
)";

}  // namespace

TEST_CASE("[[slow_consumers]] parse and round trip", "[config][slow]") {
  auto c = parse(kRules, "busd.toml");
  if (!c) FAIL(c.error().detail());
  REQUIRE(c->slow_consumers.size() == 2);
  CHECK(c->slow_consumers[0].name == "logger-*");
  CHECK(c->slow_consumers[0].subjects == std::vector<std::string>{"metrics.>", "logs.*.debug"});
  CHECK(c->slow_consumers[0].policy == SlowPolicy::DropOldest);
  CHECK(c->slow_consumers[1].name == "*");  // absent = any agent
  CHECK(c->slow_consumers[1].policy == SlowPolicy::Disconnect);

  const std::string text = render(*c);
  CHECK(text.find("[[slow_consumers]]\nname = \"logger-*\"") != std::string::npos);
  auto back = parse(text, "rendered");
  if (!back) FAIL(back.error().detail());
  CHECK(*back == *c);

  for (const SlowPolicy p : {SlowPolicy::Block, SlowPolicy::DropOldest, SlowPolicy::DropNewest, SlowPolicy::Disconnect}) {
    const std::string doc = "[[slow_consumers]]\nsubjects = [\"a\"]\npolicy = \"" + std::string(slow_policy_name(p)) + "\"\n";
    auto one = parse(doc, "busd.toml");
    REQUIRE(one);
    CHECK(one->slow_consumers.at(0).policy == p);
  }
}

TEST_CASE("the default document has no rule, and a commented example of one", "[config][slow]") {
  CHECK(defaults().slow_consumers.empty());
  const std::string_view text = default_config_text();
  CHECK(text.find("# [[slow_consumers]]") != std::string_view::npos);
  CHECK(text.find("\n[[slow_consumers]]") == std::string_view::npos);
}

TEST_CASE("bad [[slow_consumers]] tables are refused with the key named", "[config][slow]") {
  CHECK(error_of("[[slow_consumers]]\nsubjects = [\"a\"]\npolicy = \"drop\"\n") ==
        "busd.toml:3: slow_consumers[0].policy: must be one of \"block\", \"drop-oldest\", \"drop-newest\", "
        "\"disconnect\", got \"drop\"");
  CHECK(error_of("[[slow_consumers]]\npolicy = \"block\"\n") ==
        "busd.toml:1: slow_consumers[0]: subjects is required: the subscription patterns this rule covers (\">\" = all)");
  CHECK(error_of("[[slow_consumers]]\nsubjects = [\"a\"]\n") ==
        "busd.toml:1: slow_consumers[0]: policy is required: block, drop-oldest, drop-newest or disconnect");
  CHECK(error_of("[[slow_consumers]]\nsubjects = [\"a..b\"]\npolicy = \"block\"\n")
            .find("slow_consumers[0].subjects[0]: 'a..b' is not a valid subject pattern") != std::string::npos);
  CHECK(error_of("[[slow_consumers]]\nsubjects = [\"a.>.b\"]\npolicy = \"block\"\n").find("is not a valid subject pattern") !=
        std::string::npos);
  CHECK(error_of("[[slow_consumers]]\nsubjects = \"a\"\npolicy = \"block\"\n").find("slow_consumers[0].subjects: must be an array") !=
        std::string::npos);
  CHECK(error_of("[[slow_consumers]]\nname = \"\"\nsubjects = [\"a\"]\npolicy = \"block\"\n")
            .find("slow_consumers[0].name: must be a non-empty agent-name glob") != std::string::npos);
  CHECK(error_of("[[slow_consumers]]\nsubjects = [\"a\"]\npolicies = \"block\"\n").find("unknown key 'slow_consumers[0].policies'") !=
        std::string::npos);
  CHECK(error_of("slow_consumers = 3\n").find("slow_consumers: must be an array of tables") != std::string::npos);
  CHECK(error_of("[slow_consumer]\n").find("did you mean 'slow_consumers'") != std::string::npos);
}

TEST_CASE("reloadable_diff: [[slow_consumers]] takes effect on reload", "[config][slow]") {
  auto before = parse("", "a");
  auto after = parse(kRules, "b");
  REQUIRE(before);
  REQUIRE(after);
  std::vector<std::string> restart;
  CHECK(reloadable_diff(*before, *after, &restart) == std::vector<std::string>{"slow_consumers"});
  CHECK(restart.empty());
}
