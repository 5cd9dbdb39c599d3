#include "queue_groups.hpp"

#include <algorithm>

#include "subjects.hpp"

namespace bus::router {

Result<uint32_t> QueueGroups::intern_group(std::string_view name) {
  if (name.empty() || name.size() > kMaxSubjectLength) return tl::unexpected(Errc::InvalidArgument);
  for (const char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x21 || u > 0x7E) return tl::unexpected(Errc::InvalidArgument);
  }
  if (const auto it = ids_.find(name); it != ids_.end()) {
    ++slots_[it->second].refs;
    return it->second;
  }
  uint32_t id = 0;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    if (slots_.size() > UINT32_MAX) return tl::unexpected(Errc::LimitReached);
    id = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back();
    free_.reserve(slots_.size());  // so that release_group never allocates
  }
  Slot& s = slots_[id];
  s.name.assign(name);
  s.refs = 1;
  s.cursor = 0;
  ids_.emplace(s.name, id);
  return id;
}

bool QueueGroups::release_group(uint32_t id) noexcept {
  if (id == 0 || id >= slots_.size() || slots_[id].refs == 0) return false;
  Slot& s = slots_[id];
  if (--s.refs != 0) return true;
  ids_.erase(ids_.find(std::string_view(s.name)));
  std::string().swap(s.name);
  s.cursor = 0;
  free_.push_back(id);  // within the capacity reserved when the id was created
  return true;
}

uint32_t QueueGroups::find_group(std::string_view name) const noexcept {
  const auto it = ids_.find(name);
  return it == ids_.end() ? 0 : it->second;
}

std::string_view QueueGroups::group_name(uint32_t id) const noexcept {
  if (id == 0 || id >= slots_.size() || slots_[id].refs == 0) return {};
  return slots_[id].name;
}

uint32_t QueueGroups::members(uint32_t id) const noexcept {
  return id < slots_.size() ? slots_[id].refs : 0;
}

void QueueGroups::reserve(size_t max_matches) { scratch_.reserve(max_matches); }

size_t QueueGroups::select(std::span<const SubRef> matches, std::vector<SubRef>& out) {
  const size_t before = out.size();
  scratch_.clear();
  for (size_t i = 0; i < matches.size(); ++i) {
    if (matches[i].group == 0) {
      out.push_back(matches[i]);
    } else {
      scratch_.emplace_back(matches[i].group, static_cast<uint32_t>(i));
    }
  }
  // By group, then by position in the matches: the members of a group in match order.
  if (scratch_.size() > 1) std::sort(scratch_.begin(), scratch_.end());
  for (size_t a = 0; a < scratch_.size();) {
    const uint32_t g = scratch_[a].first;
    size_t b = a + 1;
    while (b < scratch_.size() && scratch_[b].first == g) ++b;
    size_t pick = 0;
    if (g < slots_.size() && slots_[g].refs != 0) pick = slots_[g].cursor++ % (b - a);
    out.push_back(matches[scratch_[a + pick].second]);
    a = b;
  }
  return out.size() - before;
}

}  // namespace bus::router
