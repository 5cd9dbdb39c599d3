// Raw baselines that scenarios run interleaved with the bus's own runs, so that every bus figure
// sits next to what the machine does without the bus, measured in the same minutes:
//
//   rtt_cacheline     two threads hand one atomic word back and forth, spinning: the floor for
//                     any round trip between two cores.
//   rtt_eventfd       two processes, two eventfds, blocking read()/write(), the payload in a
//                     shared page: the floor for a round trip in which each side sleeps in the
//                     kernel and is woken.
//   rtt_tcp           two processes, TCP over 127.0.0.1 (or between two network namespaces, see
//                     TcpPath), TCP_NODELAY, blocking sockets: where a socket-based bus starts from.
//   stream_ring_copy  the shm SPSC ring alone between two threads, copying each record in and
//                     out: the ceiling for one-way throughput through the bus's transport.
//
// The process baselines fork(): call them while the calling process has a single thread (fork()
// copies only the calling thread). Their child dies with the calling thread (PR_SET_PDEATHSIG),
// never returns into the caller's code, and is reaped before the call returns, also on errors.
#pragma once

#include <cstdint>
#include <string>

#include "clock.hpp"
#include "histogram.hpp"

namespace bus::bench {

/// Where the raw TCP baselines' two sockets live. The listening side's socket is made in the
/// network namespace `listen_netns` and listens on `listen_ip` (an ephemeral port); the
/// connecting side's is made in `connect_netns` (an open /var/run/netns/NAME; -1: the caller's
/// own). The default is loopback: both on 127.0.0.1 in the caller's namespace.
struct TcpPath {
  std::string listen_ip = "127.0.0.1";
  int listen_netns = -1;
  int connect_netns = -1;
};

struct RttParams {
  uint32_t payload = 64;       // bytes each way (rtt_cacheline carries none: its word is the message)
  uint64_t rounds = 20000;     // measured round trips
  uint64_t warmup = 2000;      // unmeasured round trips first
  int cpu_a = -1, cpu_b = -1;  // pin the two sides (-1: leave the affinity the side inherits)
  TcpPath tcp;                 // rtt_tcp: side a (the caller) connects, side b (the child) listens
};

/// Every rtt_* records one sample per measured round trip into `h` (ns, via clk.now() and
/// clk.to_ns()) and returns the wall seconds of the measured part. Side a is the calling thread:
/// its affinity is restored before the call returns. Side b is a new thread or a forked child.
/// They throw std::runtime_error with a message on failure (a peer that does not answer within
/// 10 s, a CPU that cannot be pinned, a system call that fails); they never hang forever and
/// never leave a child process behind.
double rtt_cacheline(const RttParams& p, const Clock& clk, Histogram& h);
double rtt_eventfd(const RttParams& p, const Clock& clk, Histogram& h);
double rtt_tcp(const RttParams& p, const Clock& clk, Histogram& h);

/// One-way throughput of the raw SPSC ring (shm::RingProducer/RingConsumer) between two threads,
/// in records per second: the producer (a new thread) memcpy's each record of `record_bytes` in
/// from a source buffer, the consumer (the calling thread) memcpy's it out to a destination
/// buffer; one publish() per `batch` records. Spin waits; a side that waits 10 s fails the run
/// (std::runtime_error). The calling thread's affinity is restored before the call returns.
/// One-way throughput of TCP over loopback between two processes, in records per second: the
/// child sends `records` records of `record_bytes`, `batch` of them per send() (TCP_NODELAY),
/// the calling process reads 64 KiB at a time until every byte has arrived. What a socket-based
/// bus starts from; the same batching as the bus run it sits next to.
double stream_tcp(uint32_t record_bytes, uint64_t records, uint32_t batch);

/// stream_tcp over `path` (the sender is the child on the listening side's socket, the receiver
/// the calling thread on the connecting side's), with the CPU seconds each side spent: the
/// child's whole process while it sent, the calling thread's while it received.
struct StreamResult {
  double msgs_per_s = 0;
  double sender_cpu_s = 0;
  double receiver_cpu_s = 0;
};
StreamResult stream_tcp_on(uint32_t record_bytes, uint64_t records, uint32_t batch, const TcpPath& path);

double stream_ring_copy(uint32_t record_bytes, uint64_t records, uint32_t batch, int cpu_producer,
                        int cpu_consumer);

}  // namespace bus::bench
