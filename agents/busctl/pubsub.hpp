// busctl pub / sub / req: the bus from a shell, through libbus as an ordinary agent.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bus::ctl {

struct BusOptions {
  std::string socket;   // --socket: a path or tcp:// / tls:// address; "" = $BUS_SOCKET, the default lookup
  std::string name;     // --name; "" = busctl-<pid>
  bool json = false;    // DATA (and --reply) is JSON, printed payloads are JSON: needs schema + type
  std::string schema;   // --schema FILE.fbs
  std::string type;     // --type NAME (a table of the schema)
  uint64_t count = 0;   // pub: messages to send (0 = 1); sub: stop after this many (0 = never)
  std::string timeout;  // req: reply deadline (default 1s); sub: give up after this long ("" = never)
  std::string queue;    // sub --queue GROUP
  std::string reply;    // sub --reply DATA: answer every request with it
  bool has_reply = false;
};

int run_pub(const BusOptions& o, const std::string& subject, const std::string& data);
/// Subscribes to every pattern in `subjects` (one handler: each message printed once per match).
int run_sub(const BusOptions& o, const std::vector<std::string>& subjects);
int run_req(const BusOptions& o, const std::string& subject, const std::string& data);

}  // namespace bus::ctl
