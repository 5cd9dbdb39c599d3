// Defaults of every size limit, in one place. busd's config overrides them (see README
// "Configuration"); the values here are what an unconfigured bus uses.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bus {

/// Protocol version spoken on the control socket and on links (Hello.protocol_version).
inline constexpr uint32_t kProtocolVersion = 1;

namespace defaults {

/// Largest encoded Envelope accepted at any entry point (SDK publish, ring read, socket, link).
inline constexpr uint32_t kMaxMessageSize = 1u << 20;  // 1 MiB

/// Data bytes of a shared-memory ring. A ring takes records up to half its capacity (see
/// shm::max_record_for), so the default fits kMaxMessageSize plus record framing.
inline constexpr uint64_t kRingCapacity = 4ull << 20;  // 4 MiB

/// Agents registered with one busd at once.
inline constexpr uint32_t kMaxAgents = 1024;
/// Subscriptions one agent may hold.
inline constexpr uint32_t kMaxSubscriptionsPerAgent = 1024;
/// Requests one agent may have waiting for a reply.
inline constexpr uint32_t kMaxPendingRequestsPerAgent = 1024;

/// Adaptive wait: spin this long before sleeping on the ring's eventfd.
inline constexpr uint64_t kAdaptiveSpinNs = 20'000;  // 20 us

}  // namespace defaults
}  // namespace bus
