// Zero copy for FlatBuffers: build a FlatBuffer payload straight into ring memory.
//
//   auto room = c.reserve("orders.new", 1024);   // the payload's place in the ring (8-aligned)
//   bus::InPlaceBuilder fbb(*room);               // a FlatBufferBuilder whose one buffer is the room
//   fbb.Finish(CreateOrder(fbb, ...));            // FlatBuffers builds back to front: it ends at
//   c.commit_built(fbb);                          // the room's end, and is sent where it lies
//
// The receiver's payload() is exactly the finished FlatBuffer, 8-byte aligned: GetRoot and the
// verifier work on it in place. Nothing is copied: instead of moving the FlatBuffer to the start
// of the room, the envelope prefix is written right before it
// (EnvelopeTemplate::write_prefix_with_gap); the unused front of the room becomes zero filler
// inside the message. So the message is as large as the reservation: reserve close to what the
// FlatBuffer needs.
//
// The builder never touches the heap (CreateSharedString excepted: its pool is a std::set, so do
// not use it here). When the FlatBuffer outgrows the room, FlatBufferBuilder cannot be told "no",
// so the room throws bus::ClientError with Errc::TooLarge naming the room's size. That is the
// error path only; the reservation stays open (abandon() it, or build again into it), and the
// builder must be Reset() (or dropped) before it builds again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include <flatbuffers/flatbuffers.h>

#include "bus/client.hpp"

namespace bus {
namespace detail {

/// A flatbuffers::Allocator with one fixed buffer: `room`. It hands out the room once (again
/// after it was given back) and refuses, by throwing ClientError(TooLarge), anything larger or
/// any growth.
class RoomAllocator final : public flatbuffers::Allocator {
 public:
  explicit RoomAllocator(std::span<std::byte> room) noexcept : room_(room) {}
  RoomAllocator(const RoomAllocator&) = delete;
  RoomAllocator& operator=(const RoomAllocator&) = delete;

  uint8_t* allocate(size_t size) override {
    if (size > room_.size() || given_) outgrown();
    given_ = true;
    return reinterpret_cast<uint8_t*>(room_.data());
  }
  void deallocate(uint8_t*, size_t) override { given_ = false; }
  uint8_t* reallocate_downward(uint8_t*, size_t, size_t, size_t, size_t) override { outgrown(); }

  [[nodiscard]] std::span<std::byte> room() const noexcept { return room_; }
  /// Whether it refused to grow: the builder's state is then not to be trusted.
  [[nodiscard]] bool overflowed() const noexcept { return overflowed_; }
  void rearm() noexcept { overflowed_ = false; }

 private:
  [[noreturn]] void outgrown() {
    overflowed_ = true;
    std::string why = "a FlatBuffer built in place outgrew its room of ";
    why.append(std::to_string(room_.size())).append(" bytes: reserve more");
    throw ClientError(Error(Errc::TooLarge, std::move(why)));
  }
  std::span<std::byte> room_;
  bool given_ = false;
  bool overflowed_ = false;
};

/// Holds the allocator so that it is built before the FlatBufferBuilder and outlives it.
struct RoomHolder {
  explicit RoomHolder(std::span<std::byte> room) noexcept : alloc(room) {}
  RoomAllocator alloc;
};

/// The 8-aligned part of `room` whose size is a multiple of 8 (all of it for a reserve() room).
[[nodiscard]] inline std::span<std::byte> aligned8(std::span<std::byte> room) noexcept {
  const auto at = reinterpret_cast<uintptr_t>(room.data());
  const size_t skip = static_cast<size_t>(-at & 7);
  if (skip >= room.size()) return room.first(0);
  return room.subspan(skip, (room.size() - skip) & ~size_t{7});
}

}  // namespace detail

/// A FlatBufferBuilder over a fixed span, normally the room reserve() returned: use it wherever a
/// flatbuffers::FlatBufferBuilder& goes (generated Create*/Finish*Buffer functions), then send it
/// with Client::commit_built(). It uses the 8-aligned part of `room` whose size is a multiple of
/// 8, and keeps its minimum alignment at 8, so the finished FlatBuffer starts 8-aligned and the
/// unused front of the room is a multiple of 8. Not copyable or movable (the builder points at
/// its allocator).
class InPlaceBuilder : private detail::RoomHolder, public flatbuffers::FlatBufferBuilder {
 public:
  explicit InPlaceBuilder(std::span<std::byte> room)
      : detail::RoomHolder(detail::aligned8(room)),
        flatbuffers::FlatBufferBuilder(alloc.room().size(), &alloc, false, 8) {
    Align(8);
  }
  InPlaceBuilder(const InPlaceBuilder&) = delete;
  InPlaceBuilder& operator=(const InPlaceBuilder&) = delete;

  /// Starts over in the same room (also after a TooLarge): FlatBufferBuilder::Reset plus this
  /// builder's alignment. (FlatBufferBuilder::Clear alone keeps the state of a refused growth.)
  void Clear() {
    flatbuffers::FlatBufferBuilder::Reset();
    alloc.rearm();
    Align(8);
  }
  void Reset() { Clear(); }

  /// The span the builder writes into (the 8-aligned part of the room it was given).
  [[nodiscard]] std::span<std::byte> room() const noexcept { return alloc.room(); }
  /// Whether Finish() was called since the builder was made or cleared (and it never outgrew
  /// its room).
  [[nodiscard]] bool is_finished() const noexcept {
    return flatbuffers::FlatBufferBuilder::finished && !alloc.overflowed();
  }
  /// The finished FlatBuffer: the last GetSize() bytes of the room. Empty before Finish().
  [[nodiscard]] std::span<const std::byte> built() const noexcept {
    if (!is_finished()) return {};
    return {reinterpret_cast<const std::byte*>(GetCurrentBufferPointer()), GetSize()};
  }
};

}  // namespace bus
