// Who may open what busd creates (issue 8, "Security"): the control socket and the counters page
// carry the configured mode and group (socket_mode, socket_group; the page: readable by whoever
// may connect, written by busd only), and every shared-memory segment (agent rings, lanes,
// broadcast logs: memfds) is mode 0600, reachable by no path but /proc/<pid>/fd of a process
// that holds it, which needs the right to look into that process.
//
// A forked child drops to uid 65534 (outside the test's group, or inside it) and tries each
// file: connect() the socket, open() the counters page and every memfd busd holds (through
// /proc/<busd>/fd) for reading and for writing. Case 1: mode 0660 and a group made for the test
// (an unused gid): outside the group everything is refused with EACCES; inside, it connects and
// its messages are delivered, reads the counters page but cannot write it, and still cannot
// open the segments. Case 2: mode 0600: only the owner connects; the group member is refused
// too.
//
// Root only (to change uid and group); otherwise exit 77. Takes ~2 s.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "busd_fixture.hpp"

using namespace bus;
using namespace bus::test;
using namespace std::chrono_literals;

namespace {

constexpr uid_t kOutsider = 65534;  // nobody

// A gid no group has (the test's own group, with nothing to clean up afterwards).
gid_t unused_gid() {
  for (gid_t g = 47000; g < 60000; ++g) {
    if (::getgrgid(g) == nullptr) return g;
  }
  return 0;
}

struct Target {
  std::string label;
  std::string path;
  enum Kind { Connect, Read, Write } kind;
};

int try_one(const Target& t) {
  if (t.kind == Target::Connect) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, t.path.c_str(), std::min(t.path.size() + 1, sizeof a.sun_path));
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    const int e = rc == 0 ? 0 : errno;
    ::close(fd);
    return e;
  }
  const int fd = ::open(t.path.c_str(), (t.kind == Target::Read ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

// In a child as uid 65534 with `groups` as its only groups: errno of each try (0: it worked);
// then, with `publish_to` set, a libbus agent that publishes 10 messages there (exit status
// 0 when it could).
struct ChildResult {
  std::vector<int> errnos;
  pid_t pid = -1;  // the caller reaps it (after pumping a subscriber, if it publishes)
};
ChildResult as_outsider(const std::vector<Target>& targets, const std::vector<gid_t>& groups, const Busd* d,
                        const std::string& publish_to) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    int rc = 0;
    if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(kOutsider, kOutsider, kOutsider) != 0 ||
        ::setresuid(kOutsider, kOutsider, kOutsider) != 0 || ::geteuid() != kOutsider) {
      ::_exit(100);
    }
    std::vector<int> out;
    for (const auto& t : targets) out.push_back(try_one(t));
    (void)!::write(fds[1], out.data(), out.size() * sizeof(int));
    ::close(fds[1]);
    if (!publish_to.empty()) {
      auto c = d->client("perm-member");
      if (!c) ::_exit(101);
      for (int i = 0; i < 10 && rc == 0; ++i) {
        if (!c->publish(publish_to, "from the group")) rc = 102;
      }
      if (rc == 0 && !c->drain(2s)) rc = 103;
    }
    ::_exit(rc);
  }
  ::close(fds[1]);
  ChildResult r;
  r.errnos.resize(targets.size(), -1);
  size_t got = 0;
  auto* p = reinterpret_cast<char*>(r.errnos.data());
  const size_t want = targets.size() * sizeof(int);
  while (got < want) {
    const ssize_t n = ::read(fds[0], p + got, want - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fds[0]);
  r.pid = pid;
  return r;
}

// busd's memfd segments, by the path that reopens them: /proc/<busd>/fd/<n> -> kind.
std::map<std::string, std::string> segments_of(pid_t pid) {
  std::map<std::string, std::string> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string path = dir + "/" + e->d_name;
    char link[256] = {};
    const ssize_t n = ::readlink(path.c_str(), link, sizeof link - 1);
    const std::string t = n > 0 ? std::string(link, static_cast<size_t>(n)) : std::string();
    if (t.rfind("/memfd:busd:", 0) == 0) out[path] = t.substr(12, t.find('-', 12) - 12);
  }
  ::closedir(d);
  return out;
}

std::string config(const char* mode, gid_t gid) {
  return std::string("[busd]\nsocket_mode = \"") + mode + "\"\nsocket_group = \"" + std::to_string(gid) +
         "\"\n\n[[acl]]\nuid = 65534\npublish = [\"perm.>\"]\nsubscribe = [\"perm.>\"]\n";
}

// The good agents: a 1:1 lane (a -> b) and a broadcast log (a -> b, c), so that busd holds
// agent, lane and log segments.
struct Agents {
  std::unique_ptr<Client> a, b, c;
  int got_b = 0, got_c = 0, got_member = 0;
  explicit Agents(const Busd& d) {
    a = d.client("perm-a");
    b = d.client("perm-b");
    c = d.client("perm-c");
    REQUIRE((a && b && c));
    REQUIRE(b->subscribe("perm.lane", [&](const Message&) { ++got_b; }));
    REQUIRE(b->subscribe("perm.log", [&](const Message&) { ++got_b; }));
    REQUIRE(c->subscribe("perm.log", [&](const Message&) { ++got_c; }));
    REQUIRE(c->subscribe("perm.member", [&](const Message&) { ++got_member; }));
    // Lanes open once busd answered the first message's route query: publish until both are up.
    int sent = 0;
    REQUIRE(eventually([&] {
      REQUIRE(a->publish("perm.lane", "x"));
      REQUIRE(a->publish("perm.log", "y"));
      ++sent;
      (void)a->poll(1ms);
      (void)b->poll(1ms);
      (void)c->poll(1ms);
      return a->stats().lanes_open >= 2 && a->stats().lane_sent >= 2;
    }));
    REQUIRE(pump_until(*b, [&] { return got_b == 2 * sent; }));
    REQUIRE(pump_until(*c, [&] { return got_c == sent; }));
  }
};

std::vector<Target> targets_of(const Busd& d, const std::map<std::string, std::string>& segs) {
  std::vector<Target> t{{"socket", d.socket(), Target::Connect},
                        {"counters page (read)", d.counters_path(), Target::Read},
                        {"counters page (write)", d.counters_path(), Target::Write}};
  for (const auto& [path, kind] : segs) {
    t.push_back({kind + " segment " + path + " (read)", path, Target::Read});
    t.push_back({kind + " segment " + path + " (write)", path, Target::Write});
  }
  return t;
}

void require_root() {
  if (::geteuid() != 0) {
    std::printf("SKIP: needs root to run as another uid and group (euid is %u)\n", ::geteuid());
    std::exit(77);
  }
}

}  // namespace

TEST_CASE("mode 0660 and a group: outside the group nothing opens; inside, the socket and a read-only page") {
  require_root();
  const gid_t gid = unused_gid();
  REQUIRE(gid != 0);
  Busd d(config("0660", gid), "perm660");
  REQUIRE(d.started());
  std::filesystem::permissions(d.dir(), std::filesystem::perms(0755));
  Agents agents(d);

  // What busd created, as root sees it.
  struct stat st {};
  REQUIRE(::stat(d.socket().c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0660);
  CHECK(st.st_gid == gid);
  REQUIRE(::stat(d.counters_path().c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
  CHECK(st.st_gid == gid);
  const auto segs = segments_of(d.pid());
  std::map<std::string, int> kinds;
  for (const auto& [path, kind] : segs) {
    ++kinds[kind];
    REQUIRE(::stat(path.c_str(), &st) == 0);
    INFO(path << " (" << kind << ")");
    CHECK((st.st_mode & 07777) == 0600);
    CHECK(st.st_uid == ::geteuid());
  }
  CHECK(kinds["agent"] == 3);
  CHECK(kinds["lane"] >= 1);
  CHECK(kinds["log"] >= 1);
  // No file in /dev/shm: segments have no path.
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm")) {
    CHECK(e.path().filename().string().find("busd") == std::string::npos);
  }

  const auto targets = targets_of(d, segs);
  SECTION("outside the group: every open refused") {
    auto r = as_outsider(targets, {}, &d, "");
    CHECK(reap(r.pid) == 0);
    for (size_t i = 0; i < targets.size(); ++i) {
      INFO(targets[i].label << ": errno " << r.errnos[i] << " (" << std::strerror(r.errnos[i]) << ")");
      CHECK(r.errnos[i] == EACCES);
    }
  }
  SECTION("inside the group: connects and works, reads the counters page only") {
    auto r = as_outsider(targets, {gid}, &d, "perm.member");
    for (size_t i = 0; i < targets.size(); ++i) {
      INFO(targets[i].label << ": errno " << r.errnos[i] << " (" << std::strerror(r.errnos[i]) << ")");
      const bool allowed = targets[i].label == "socket" || targets[i].label == "counters page (read)";
      CHECK(r.errnos[i] == (allowed ? 0 : EACCES));
    }
    CHECK(pump_until(*agents.c, [&] { return agents.got_member == 10; }));
    CHECK(reap(r.pid) == 0);
  }
  CHECK(d.stop(SIGTERM) == 0);
}

TEST_CASE("mode 0600: only the owner connects; the group is refused too") {
  require_root();
  const gid_t gid = unused_gid();
  REQUIRE(gid != 0);
  Busd d(config("0600", gid), "perm600");
  REQUIRE(d.started());
  std::filesystem::permissions(d.dir(), std::filesystem::perms(0755));
  Agents agents(d);  // the owner's agents connect and work
  struct stat st {};
  REQUIRE(::stat(d.socket().c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  REQUIRE(::stat(d.counters_path().c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  const auto targets = targets_of(d, segments_of(d.pid()));
  for (const std::vector<gid_t>& groups : {std::vector<gid_t>{}, std::vector<gid_t>{gid}}) {
    auto r = as_outsider(targets, groups, &d, "");
    CHECK(reap(r.pid) == 0);
    for (size_t i = 0; i < targets.size(); ++i) {
      INFO((groups.empty() ? "outside" : "inside") << " the group: " << targets[i].label << ": errno " << r.errnos[i]);
      CHECK(r.errnos[i] == EACCES);
    }
  }
  CHECK(d.stop(SIGTERM) == 0);
}
