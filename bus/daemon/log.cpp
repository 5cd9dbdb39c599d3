#include "log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace bus::log {
namespace {

std::atomic<Level> g_level{Level::Info};

constexpr std::string_view kNames[] = {"error", "warn", "info", "debug"};
// syslog priorities (err, warning, info, debug) as the "<N>" prefix journald reads off a line.
constexpr std::string_view kJournalPrefix[] = {"<3>", "<4>", "<6>", "<7>"};

// Whether stderr is connected to the journal: systemd sets $JOURNAL_STREAM to "<dev>:<ino>" of
// the stream it gave the service; a stderr redirected elsewhere (a file, a pipe) no longer
// matches (systemd.exec(5)). Looked at once, on the first line.
bool stderr_is_journal() {
  const char* env = std::getenv("JOURNAL_STREAM");
  if (env == nullptr || *env == '\0') return false;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  unsigned long long dev = 0, ino = 0;
  char tail = 0;
  if (std::sscanf(env, "%llu:%llu%c", &dev, &ino, &tail) != 2) return false;
  return dev == static_cast<unsigned long long>(st.st_dev) && ino == static_cast<unsigned long long>(st.st_ino);
}

// Quote values with spaces or quotes so the line stays machine-parseable.
void append_value(std::string& out, std::string_view v) {
  bool plain = !v.empty();
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || c == '\n' || c == '\\') plain = false;
  }
  if (plain) {
    out += v;
    return;
  }
  out += '"';
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    out += c == '\n' ? ' ' : c;
  }
  out += '"';
}

}  // namespace

bool set_level(std::string_view name) noexcept {
  for (size_t i = 0; i < std::size(kNames); ++i) {
    if (name == kNames[i]) {
      g_level.store(static_cast<Level>(i), std::memory_order_relaxed);
      return true;
    }
  }
  return false;
}

bool enabled(Level l) noexcept { return l <= g_level.load(std::memory_order_relaxed); }

void write(Level l, std::string_view event, std::initializer_list<Field> fields) {
  if (!enabled(l)) return;
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  char stamp[80];
  std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", t.tm_year + 1900,
                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1'000'000);
  static const bool journal = stderr_is_journal();
  std::string line;
  if (journal) line = kJournalPrefix[static_cast<size_t>(l)];  // journald keeps the level, strips this
  line += "ts=";
  line += stamp;
  line += " level=";
  line += kNames[static_cast<size_t>(l)];
  line += " event=";
  line += event;
  for (const auto& f : fields) {
    line += ' ';
    line += f.key;
    line += '=';
    append_value(line, f.value);
  }
  line += '\n';
  // One write(2) per line: lines from busd never interleave.
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace bus::log
