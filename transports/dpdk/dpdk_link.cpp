#include "dpdk/dpdk_link.hpp"

#include <charconv>

#include "bus/clock.hpp"
#include "dgram/dgram_link.hpp"

namespace bus::dpdk {
namespace {

// The datagram layer's view of an Endpoint.
class EndpointIo final : public dgram::PacketIo {
 public:
  EndpointIo(Port& port, Endpoint* ep) : port_(port), ep_(ep) {}
  ~EndpointIo() override { port_.detach(ep_); }
  EndpointIo(const EndpointIo&) = delete;
  EndpointIo& operator=(const EndpointIo&) = delete;

  size_t rx_burst(dgram::RxPacket* out, size_t max) override { return ep_->rx_burst(out, max); }
  void release(const uint64_t* handles, size_t n) override { ep_->release(handles, n); }
  size_t tx(std::span<const std::span<const std::byte>> packets) override { return ep_->tx(packets); }
  [[nodiscard]] bool has_rx() const noexcept override { return ep_->has_rx(); }
  [[nodiscard]] int wait_fd() const noexcept override { return ep_->wait_fd(); }
  [[nodiscard]] bool arm() noexcept override { return ep_->arm(); }
  void disarm() noexcept override { ep_->disarm(); }

 private:
  Port& port_;
  Endpoint* ep_;
};

uint64_t mono() { return clock::mono_ns(); }

}  // namespace

Expected<Ipv4Endpoint> parse_ipv4_endpoint(std::string_view text) {
  auto bad = [&] {
    std::string why = "'";
    why += text;
    why += "' is not an IPv4 address and UDP port (\"10.0.0.1:7400\")";
    return fail(Errc::InvalidArgument, std::move(why));
  };
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return bad();
  Ipv4Endpoint e;
  const std::string_view host = text.substr(0, colon);
  size_t at = 0;
  for (int part = 0; part < 4; ++part) {
    unsigned v = 0;
    const char* b = host.data() + at;
    const char* end = host.data() + host.size();
    auto [p, ec] = std::from_chars(b, end, v);
    if (ec != std::errc{} || p == b || v > 255 || p - b > 3) return bad();
    e.ip = e.ip << 8 | v;
    at = static_cast<size_t>(p - host.data());
    if (part < 3) {
      if (at >= host.size() || host[at] != '.') return bad();
      ++at;
    }
  }
  if (at != host.size()) return bad();
  unsigned port = 0;
  const std::string_view ps = text.substr(colon + 1);
  auto [p, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), port);
  if (ec != std::errc{} || p != ps.data() + ps.size() || port == 0 || port > 65535) return bad();
  e.port = static_cast<uint16_t>(port);
  return e;
}

Expected<std::unique_ptr<link::Link>> dial(Port& port, const EndpointOptions& ep, const dgram::ChannelOptions& o,
                                           uint32_t conn_id) {
  auto e = port.attach(ep);
  if (!e) return tl::unexpected(e.error());
  dgram::ChannelOptions co = o;
  co.max_packet = static_cast<uint32_t>(std::min<size_t>(co.max_packet, (*e)->max_payload()));
  auto io = std::make_unique<EndpointIo>(port, *e);
  return std::unique_ptr<link::Link>(std::make_unique<dgram::DgramLink>(std::move(io), co, conn_id, &mono));
}

}  // namespace bus::dpdk
