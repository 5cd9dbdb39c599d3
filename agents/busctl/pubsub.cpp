#include "pubsub.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>
#include <optional>
#include <span>
#include <vector>

#include "bus/client.hpp"
#include "bus/clock.hpp"
#include "commands.hpp"
#include "format.hpp"
#include "payload.hpp"

namespace bus::ctl {
namespace {

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop_signal(int) { g_stop = 1; }

// The exit code for an error from busd, libbus or a responder.
int exit_code(Errc c) {
  switch (c) {
    case Errc::Timeout: return kExitTimeout;
    case Errc::WouldBlock: return kExitTimeout;  // busd did not take the message in time
    case Errc::NoResponders: return kExitNoResponders;
    case Errc::InvalidArgument:
    case Errc::TooLarge:
    case Errc::BadMessage: return kExitBadInput;
    case Errc::Closed:
    case Errc::NotFound:
    case Errc::ShuttingDown:
    case Errc::System: return kExitNotRunning;
    default: return kExitRefused;
  }
}

int report(const char* what, const Error& e) {
  std::fprintf(stderr, "busctl %s: %s\n", what, e.message().c_str());
  return exit_code(e.code());
}

struct Payload {
  std::optional<JsonCodec> codec;
  int rc = kExitOk;  // not ok: the message was printed
};

// --json needs --schema and --type (checked in main.cpp); loads the schema.
Payload codec_for(const BusOptions& o, const char* what) {
  Payload p;
  if (!o.json) return p;
  auto c = JsonCodec::load(o.schema, o.type);
  if (!c) {
    std::fprintf(stderr, "busctl %s: %s\n", what, c.error().detail().c_str());
    p.rc = kExitBadInput;
    return p;
  }
  p.codec.emplace(std::move(*c));
  return p;
}

// DATA as bytes: the text itself ("-": standard input), or JSON through the codec.
std::optional<std::vector<std::byte>> encode(Payload& p, const std::string& data, const char* what) {
  std::string text = data;
  if (data == "-") text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  std::vector<std::byte> out;
  if (p.codec) {
    auto fb = p.codec->from_json(text);
    if (!fb) {
      std::fprintf(stderr, "busctl %s: %s\n", what, fb.error().detail().c_str());
      return std::nullopt;
    }
    out.resize(fb->size());
    std::memcpy(out.data(), fb->data(), fb->size());
  } else {
    out.resize(text.size());
    std::memcpy(out.data(), text.data(), text.size());
  }
  return out;
}

// A received payload for printing: its text made printable, or JSON through the codec.
Expected<std::string> decode(const Payload& p, const Message& m) {
  if (p.codec) return p.codec->to_json(m.payload());
  return printable(m.text());
}

Expected<std::unique_ptr<Client>> connect(const BusOptions& o) {
  ClientOptions co;
  co.name = o.name.empty() ? "busctl-" + std::to_string(::getpid()) : o.name;
  co.address = o.socket;
  co.reconnect = false;  // a tool: busd going away ends it
  co.wait = "block";     // never spin: busctl must not take a core from busd
  return Client::connect(std::move(co));
}

int connect_failed(const char* what, const Error& e) {
  std::fprintf(stderr, "busctl %s: cannot connect to busd: %s\n", what, e.message().c_str());
  const Errc c = e.code();
  return c == Errc::PermissionDenied || c == Errc::AlreadyExists || c == Errc::LimitReached ||
                 c == Errc::InvalidArgument
             ? kExitRefused
             : kExitNotRunning;
}

void catch_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace

int run_pub(const BusOptions& o, const std::string& subject, const std::string& data) {
  Payload p = codec_for(o, "pub");
  if (p.rc != kExitOk) return p.rc;
  auto bytes = encode(p, data, "pub");
  if (!bytes) return kExitBadInput;
  auto c = connect(o);
  if (!c) return connect_failed("pub", c.error());
  Client& client = **c;
  const uint64_t n = o.count == 0 ? 1 : o.count;
  for (uint64_t i = 0; i < n; ++i) {
    if (auto r = client.publish(subject, std::span<const std::byte>(*bytes)); !r) {
      std::string why(errc_name(r.error()));
      if (r.error() == Errc::InvalidArgument) why = "'" + subject + "' is not a subject";
      if (r.error() == Errc::TooLarge) why = std::to_string(bytes->size()) + " bytes is above busd's maximum message size";
      std::fprintf(stderr, "busctl pub: %s (after %llu of %llu)\n", why.c_str(), static_cast<unsigned long long>(i),
                   static_cast<unsigned long long>(n));
      return exit_code(r.error());
    }
  }
  // Everything handed to busd before we go (a closed agent's unread ring is dropped).
  if (auto d = client.drain(std::chrono::seconds(5)); !d) return report("pub", d.error());
  return kExitOk;
}

int run_sub(const BusOptions& o, const std::vector<std::string>& subjects) {
  Payload p = codec_for(o, "sub");
  if (p.rc != kExitOk) return p.rc;
  int64_t timeout = -1;
  if (!o.timeout.empty() && (timeout = parse_duration(o.timeout)) < 0) {
    std::fprintf(stderr, "busctl sub: --timeout '%s' is not a duration (e.g. 1s, 500ms)\n", o.timeout.c_str());
    return kExitUsage;
  }
  std::vector<std::byte> reply;
  if (o.has_reply) {
    auto r = encode(p, o.reply, "sub --reply");
    if (!r) return kExitBadInput;
    reply = std::move(*r);
  }
  auto c = connect(o);
  if (!c) return connect_failed("sub", c.error());
  Client& client = **c;

  uint64_t received = 0;
  int rc = kExitOk;
  auto handler = [&](const Message& m) {
    if (o.count != 0 && received >= o.count) return;  // more arrived in the same poll
    ++received;
    auto text = decode(p, m);
    if (!text) {
      std::fprintf(stderr, "busctl sub: message on %s: %s\n", printable(m.subject()).c_str(),
                   text.error().detail().c_str());
      rc = kExitBadInput;
    } else if (p.codec) {
      std::printf("{\"subject\": %s, \"data\": %s}\n", json_string(m.subject()).c_str(), text->c_str());
    } else {
      std::printf("%s %s\n", printable(m.subject()).c_str(), text->c_str());
    }
    std::fflush(stdout);
    if (m.is_request() && o.has_reply) {
      if (auto r = client.reply(m, std::span<const std::byte>(reply)); !r) {
        std::fprintf(stderr, "busctl sub: reply on %s: %s\n", printable(m.subject()).c_str(),
                     std::string(errc_name(r.error())).c_str());
      }
    }
  };
  SubscribeOptions so;
  so.queue_group = o.queue;
  for (const auto& subject : subjects) {
    if (auto s = client.subscribe(subject, handler, so); !s) {
      std::fprintf(stderr, "busctl sub: %s: %s\n", printable(subject).c_str(), s.error().message().c_str());
      return exit_code(s.error().code());
    }
  }
  std::string what = printable(subjects.front());
  if (subjects.size() > 1) what += " (and " + std::to_string(subjects.size() - 1) + " more)";
  std::fprintf(stderr, "busctl: listening on %s\n", what.c_str());
  std::fflush(stderr);

  catch_signals();
  const uint64_t start = clock::mono_ns();
  bool timed_out = false;
  while (g_stop == 0 && (o.count == 0 || received < o.count)) {
    uint64_t slice = 200'000'000;  // wake up now and then for Ctrl-C
    if (timeout >= 0) {
      const uint64_t waited = clock::mono_ns() - start;
      if (waited >= static_cast<uint64_t>(timeout)) {
        timed_out = true;
        break;
      }
      slice = std::min<uint64_t>(slice, static_cast<uint64_t>(timeout) - waited);
    }
    if (auto r = client.poll(std::chrono::nanoseconds(slice)); !r) {
      if (r.error() == Errc::Timeout) continue;
      std::fprintf(stderr, "busctl sub: %s\n", r.error() == Errc::Closed ? "busd closed the connection"
                                                                         : std::string(errc_name(r.error())).c_str());
      return kExitNotRunning;
    }
  }
  (void)client.drain(std::chrono::seconds(1));  // replies handed to busd before we go
  if (timed_out && (o.count != 0 ? received < o.count : received == 0)) {
    std::fprintf(stderr, "busctl sub: timeout: %llu message%s on %s in %s\n",
                 static_cast<unsigned long long>(received), received == 1 ? "" : "s", what.c_str(),
                 o.timeout.c_str());
    return kExitTimeout;
  }
  return rc;
}

int run_req(const BusOptions& o, const std::string& subject, const std::string& data) {
  const std::string t = o.timeout.empty() ? "1s" : o.timeout;
  const int64_t timeout = parse_duration(t);
  if (timeout <= 0) {
    std::fprintf(stderr, "busctl req: --timeout '%s' is not a positive duration (e.g. 1s, 500ms)\n", t.c_str());
    return kExitUsage;
  }
  Payload p = codec_for(o, "req");
  if (p.rc != kExitOk) return p.rc;
  auto bytes = encode(p, data, "req");
  if (!bytes) return kExitBadInput;
  auto c = connect(o);
  if (!c) return connect_failed("req", c.error());
  Client& client = **c;
  auto r = client.request(subject, std::span<const std::byte>(*bytes), std::chrono::nanoseconds(timeout));
  if (!r) {
    const Errc e = r.error().code();
    if (e == Errc::Timeout) {
      std::fprintf(stderr, "busctl req: timeout: no reply on %s in %s\n", printable(subject).c_str(), t.c_str());
    } else if (e == Errc::NoResponders) {
      std::fprintf(stderr, "busctl req: no responders: nobody is subscribed to %s\n", printable(subject).c_str());
    } else {
      std::fprintf(stderr, "busctl req: %s\n", r.error().message().c_str());
    }
    return exit_code(e);
  }
  auto text = decode(p, *r);
  if (!text) {
    std::fprintf(stderr, "busctl req: reply: %s\n", text.error().detail().c_str());
    return kExitBadInput;
  }
  std::printf("%s\n", text->c_str());
  std::fflush(stdout);
  client.close();
  return kExitOk;
}

}  // namespace bus::ctl
