// busd's Prometheus endpoint ([busd] metrics_listen): a small HTTP/1.1 server on its own thread
// that answers GET /metrics with the text exposition format 0.0.4, read from busd's counters
// page through a read-only CountersView. busd's loop never sees a scrape: the thread shares
// nothing with it but the page, which busd writes anyway (relaxed stores, one writer each).
//
// Series (all names start with busd_; counters end in _total):
//   busd_up, busd_info{version}, busd_start_time_seconds, busd_heartbeat_age_seconds
//   one family per global counter (counters::kGlobals: its name, help, and gauge or counter)
//   busd_agent_*{agent,id}           per agent slot (active and dead)
//   busd_pattern_*{pattern}          per subscription pattern ("(other patterns)": overflow)
//   busd_lane_*{lane,direction,from,to}, busd_lane_up{lane,agent_a,agent_b}   per lane slot
//   busd_peer_*{node,address,kind}   per link slot (a peer busd)
// Every family's HELP and TYPE are written even when it has no sample, so one scrape of any
// busd names every family this version exports.
//
// HTTP: GET and HEAD of /metrics (a query string is ignored); 404 for another path, 405 for
// another method, 400 for a malformed request line, 431 for a head above kMaxRequest bytes,
// 408 when the head takes longer than kReadTimeoutMs. Every answer has Connection: close. At
// most kMaxConnections at once: a new one then closes the connection that has waited longest
// for its request (idle clients cannot keep a scraper out).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "bus/counters.hpp"
#include "bus/error.hpp"
#include "tcp/tcp_link.hpp"

namespace bus::daemon::metrics {

inline constexpr size_t kMaxRequest = 8192;         // request line and headers
inline constexpr uint64_t kReadTimeoutMs = 5000;    // from accept to the end of the head
inline constexpr uint64_t kWriteTimeoutMs = 10000;  // to send the answer
inline constexpr uint64_t kLingerMs = 1000;         // reading what a client still sends, after the answer
inline constexpr size_t kMaxConnections = 16;

/// Appends `v` as a label value: backslash, double quote and line feed escaped; bytes that are
/// not valid UTF-8 become U+FFFD (the format is UTF-8).
void append_label_value(std::string& out, std::string_view v);

/// The exposition text of the page `v` maps; `now_realtime_ns` (CLOCK_REALTIME) judges its
/// heartbeat (busd_up) and gives busd_heartbeat_age_seconds.
[[nodiscard]] std::string render(const counters::CountersView& v, uint64_t now_realtime_ns);

/// What the server answers to a complete request head (testable without a socket): the status
/// line, headers and, for GET /metrics, render()'s text. `head` is everything up to and
/// including the blank line.
struct Answer {
  int status = 0;
  std::string bytes;  // the whole response
};
[[nodiscard]] Answer answer(std::string_view head, const counters::CountersView& v, uint64_t now_realtime_ns);
/// An answer without a body other than a one-line explanation (errors).
[[nodiscard]] Answer error_answer(int status, std::string_view why);

class Server {
 public:
  /// Binds `listen` (tcp::listen_endpoint: "9464" or ":9464" is loopback), maps the page at
  /// `counters_path` read-only and starts the thread. Errors name metrics_listen. The caller's
  /// thread should block the signals busd takes through its signalfd first: the new thread
  /// inherits the mask.
  [[nodiscard]] static Expected<std::unique_ptr<Server>> start(const std::string& listen,
                                                               const std::string& counters_path);
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  /// Stops and joins the thread (stop()).
  ~Server();

  /// Wakes the thread, which closes its connections and the listener and ends; joins it.
  /// A second call does nothing.
  void stop() noexcept;
  /// "host:port" bound (the port is the real one when 0 was asked).
  [[nodiscard]] const std::string& address() const noexcept { return address_; }

 private:
  Server() = default;
  void run() noexcept;

  tcp::TcpListener listener_;
  int wake_fd_ = -1;  // eventfd: stop() writes it
  counters::CountersView view_;
  std::string address_;
  std::thread thread_;
};

}  // namespace bus::daemon::metrics
