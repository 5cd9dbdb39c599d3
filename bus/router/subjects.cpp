#include "subjects.hpp"

namespace bus::router {

namespace {

constexpr bool token_char(char c) noexcept {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x21 && u <= 0x7E && c != '.' && c != '*' && c != '>';
}

Result<void> check(std::string_view s, bool wildcards) noexcept {
  if (s.empty() || s.size() > kMaxSubjectLength) return tl::unexpected(Errc::InvalidArgument);
  Tokens t(s);
  while (!t.done()) {
    const std::string_view tok = t.next();
    if (tok.empty()) return tl::unexpected(Errc::InvalidArgument);
    if (wildcards && tok == "*") continue;
    if (wildcards && tok == ">") {
      if (!t.done()) return tl::unexpected(Errc::InvalidArgument);
      continue;
    }
    for (const char c : tok) {
      if (!token_char(c)) return tl::unexpected(Errc::InvalidArgument);
    }
  }
  return {};
}

constexpr std::string_view first_token(std::string_view s) noexcept {
  return s.substr(0, s.find('.'));
}

}  // namespace

Result<void> validate_subject(std::string_view s) noexcept { return check(s, false); }

Result<void> validate_pattern(std::string_view p) noexcept { return check(p, true); }

SubjectClass classify(std::string_view s) noexcept {
  const std::string_view first = first_token(s);
  if (first == kSystemToken) return SubjectClass::System;
  if (first == kInboxToken) return SubjectClass::Inbox;
  return SubjectClass::Normal;
}

Result<void> validate_agent_publish(std::string_view s) noexcept {
  if (auto v = validate_subject(s); !v) return v;
  if (classify(s) == SubjectClass::System) return tl::unexpected(Errc::PermissionDenied);
  return {};
}

bool pattern_matches(std::string_view pattern, std::string_view subject) noexcept {
  Tokens p(pattern);
  Tokens s(subject);
  while (!p.done()) {
    const std::string_view pt = p.next();
    if (s.done()) return false;                  // the pattern wants a token more
    if (pt == ">" && p.done()) return true;      // the subject has one or more left
    const std::string_view st = s.next();
    if (pt != "*" && pt != st) return false;
  }
  return s.done();
}

// Both are token sequences; compare them position by position.
//   outer '>' (last): inner has one or more tokens left, each a literal, '*' or '>', and every
//                     subject they match has one or more tokens there: covered.
//   inner '>' (last), outer anything but a final '>': inner matches tails of any length >= 1,
//                     outer's remaining tokens fix the tail length: not covered.
//   outer '*':        matches whatever inner's literal or '*' matches: go on.
//   outer literal:    covers only the same literal; an inner '*' matches other tokens too.
// The token alphabet is unbounded, so an inner '*' always has a token no outer literal names.
bool pattern_covers(std::string_view outer, std::string_view inner) noexcept {
  Tokens o(outer);
  Tokens i(inner);
  while (!o.done()) {
    const std::string_view ot = o.next();
    if (i.done()) return false;               // outer needs a token more than inner gives
    if (ot == ">" && o.done()) return true;
    const std::string_view it = i.next();
    if (it == ">" && i.done()) return false;
    if (ot == "*") continue;
    if (it == "*" || it != ot) return false;
  }
  return i.done();                             // inner must not need more tokens than outer has
}

}  // namespace bus::router
