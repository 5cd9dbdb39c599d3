// busbench envelope: what encoding and verifying an Envelope costs per message, one thread.
// Compares a full FlatBufferBuilder build (the obvious way) with EnvelopeTemplate (prefix copy
// plus in-place header), and the verifier that every message from outside the process passes.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "bus/envelope.hpp"
#include "clock.hpp"
#include "report.hpp"
#include "scenarios.hpp"

namespace bus::bench {
namespace {

inline void keep(const void* p) noexcept { asm volatile("" : : "r"(p) : "memory"); }

template <class F>
double ns_per_op(uint64_t n, F&& body) {
  const uint64_t t0 = clock::mono_ns();
  for (uint64_t i = 0; i < n; ++i) body(i);
  return static_cast<double>(clock::mono_ns() - t0) / static_cast<double>(n);
}

}  // namespace

int run_envelope(const EnvelopeOptions& o) {
  char header[256];
  std::snprintf(header, sizeof header,
                "busbench envelope: subject \"svc.plan.request\", %u B payload, %llu messages x %d runs",
                o.payload, static_cast<unsigned long long>(o.iterations), o.runs);
  Report rep("envelope", header);
  const std::vector<std::byte> payload(o.payload, std::byte{0x5A});
  const EnvelopeTemplate::Strings strings{"svc.plan.request", "_inbox.planner.7", "planner", ""};
  auto tmpl = EnvelopeTemplate::make(strings);
  if (!tmpl) {
    std::fprintf(stderr, "busbench: %s\n", tmpl.error().message().c_str());
    return 1;
  }
  std::vector<uint64_t> out_words(tmpl->size_for(o.payload) / 8 + 2);
  auto* out = reinterpret_cast<std::byte*>(out_words.data());
  const auto encoded = build_envelope(strings, payload, MessageMeta{});
  flatbuffers::FlatBufferBuilder fbb(512);

  for (int run = 0; run < o.runs; ++run) {
    if (!o.quiet) std::fprintf(stderr, "\r  run %d/%d", run + 1, o.runs);
    rep.cost("build: FlatBufferBuilder, reused").ns_per_op.push_back(ns_per_op(o.iterations, [&](uint64_t i) {
      fbb.Clear();
      auto body = fbb.CreateVector(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
      auto src = fbb.CreateString(strings.source.data(), strings.source.size());
      auto reply = fbb.CreateString(strings.reply_to.data(), strings.reply_to.size());
      auto subj = fbb.CreateString(strings.subject.data(), strings.subject.size());
      wire::Header h;
      h.mutate_msg_id(i);
      h.mutate_timestamp_ns(i);
      wire::EnvelopeBuilder eb(fbb);
      eb.add_header(&h);
      eb.add_subject(subj);
      eb.add_reply_to(reply);
      eb.add_source(src);
      eb.add_payload(body);
      wire::FinishEnvelopeBuffer(fbb, eb.Finish());
      keep(fbb.GetBufferPointer());
    }));
    rep.cost("build: EnvelopeTemplate::write (in place)").ns_per_op.push_back(ns_per_op(o.iterations, [&](uint64_t i) {
      MessageMeta m;
      m.kind = wire::Kind::Request;
      m.msg_id = i;
      m.stamp = clock::Stamp{i, 5'000'000, true};
      m.source_id = 7;
      tmpl->write(out, payload, m);
      keep(out);
    }));
    rep.cost("verify: EnvelopeView::verify").ns_per_op.push_back(ns_per_op(o.iterations, [&](uint64_t) {
      auto v = EnvelopeView::verify(encoded, defaults::kMaxMessageSize);
      keep(&v);
    }));
    rep.cost("verify + read subject and payload").ns_per_op.push_back(ns_per_op(o.iterations, [&](uint64_t) {
      auto v = EnvelopeView::verify(encoded, defaults::kMaxMessageSize);
      if (v) {
        keep(v->subject().data());
        keep(v->payload().data());
      }
    }));
  }
  if (!o.quiet) std::fprintf(stderr, "\r%30s\r", "");
  rep.print(stdout);
  std::printf("  encoded size: %zu B (%zu B prefix + %u B payload)\n", tmpl->size_for(o.payload),
              tmpl->prefix_size(), o.payload);
  if (!o.json.empty() && !rep.write_json(o.json)) {
    std::fprintf(stderr, "busbench: cannot write %s: %s\n", o.json.c_str(), std::strerror(errno));
    return 1;
  }
  return 0;
}

}  // namespace bus::bench
