// Subjects and subscription patterns (the NATS convention): validation, a reference matcher and
// pattern coverage for ACLs.
//
//   subject   dot-separated tokens, 1..255 bytes; a token is 1+ bytes of printable ASCII
//             0x21..0x7E other than '.', '*' and '>'.          "svc.plan.run"
//   pattern   the same, and a token may be exactly '*' (one token) or, as the last token only,
//             exactly '>' (one or more tokens).                   "svc.*.run", "svc.>", ">"
//
// `a.>` matches `a.b` and `a.b.c` but not `a`; `>` matches every subject; `*` never matches an
// empty token or two tokens. Subjects whose first token is `$bus` are busd's own (agents may
// subscribe, never publish); those whose first token is `_INBOX` are reply inboxes that busd
// routes directly to one agent, never through the subscription trie.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "bus/error.hpp"

namespace bus::router {

inline constexpr size_t kMaxSubjectLength = 255;
/// A subject of 255 bytes has at most 128 tokens.
inline constexpr size_t kMaxTokens = (kMaxSubjectLength + 1) / 2;
inline constexpr std::string_view kSystemToken = "$bus";
inline constexpr std::string_view kInboxToken = "_INBOX";

/// A concrete subject (a publish target). InvalidArgument when it breaks the rules above.
[[nodiscard]] Result<void> validate_subject(std::string_view s) noexcept;

/// A subscription pattern. InvalidArgument when it breaks the rules above ('>' not last,
/// wildcards glued to other characters: "a*", "*b", ">>").
[[nodiscard]] Result<void> validate_pattern(std::string_view p) noexcept;

enum class SubjectClass : uint8_t {
  Normal,  // routed through the trie
  System,  // first token `$bus`: published by busd only
  Inbox,   // first token `_INBOX`: a reply inbox, routed directly to its agent
};

/// The class of a subject (or pattern) by its first token. Does not validate.
[[nodiscard]] SubjectClass classify(std::string_view s) noexcept;

/// What busd checks on a publish from an agent: a valid subject (InvalidArgument) outside
/// `$bus` (PermissionDenied).
[[nodiscard]] Result<void> validate_agent_publish(std::string_view s) noexcept;

/// True when `pattern` matches `subject`: the simple token-by-token reference, used by the ACL,
/// the tests and the fuzzer's differential check. Meant for a valid pattern and subject; on
/// other input it returns some answer without undefined behaviour ('>' not last compares as
/// a literal).
[[nodiscard]] bool pattern_matches(std::string_view pattern, std::string_view subject) noexcept;

/// True when every subject that `inner` matches is also matched by `outer` (an ACL grant of
/// `jobs.>` covers a subscription to `jobs.*.x`, not one to `>` or `jobs`). Exact for valid
/// patterns over unbounded subjects. It ignores the 255-byte limit, which can only turn a true
/// into a false (never the reverse): an inner `P.>` with P of 252+ bytes matches only
/// one-token tails and is reported as not covered by `P.*`.
[[nodiscard]] bool pattern_covers(std::string_view outer, std::string_view inner) noexcept;

/// Walks the tokens of a dot-separated string: "a.b" gives "a" then "b"; "" gives one empty
/// token, "a." gives "a" then "".
class Tokens {
 public:
  explicit constexpr Tokens(std::string_view s) noexcept : rest_(s) {}

  /// True once the last token was taken.
  [[nodiscard]] constexpr bool done() const noexcept { return done_; }

  /// The next token. Call only while !done().
  constexpr std::string_view next() noexcept {
    const size_t dot = rest_.find('.');
    std::string_view tok = rest_.substr(0, dot);
    if (dot == std::string_view::npos) {
      done_ = true;
      rest_ = {};
    } else {
      rest_.remove_prefix(dot + 1);
    }
    return tok;
  }

 private:
  std::string_view rest_;
  bool done_ = false;
};

}  // namespace bus::router
