// load_file(): reads busd.toml (bounded, errno kept) and hands it to parse().
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "config/config.hpp"
#include "config/fields.hpp"

namespace bus::config {

Expected<Config> load_file(const std::string& path) {
  const std::string shown = detail::one_line(path);  // messages stay on one line
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return tl::unexpected(system_error(shown, errno));
  std::string text;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return tl::unexpected(system_error(shown, err));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxConfigFileSize) {
      ::close(fd);
      return fail(Errc::TooLarge,
                  shown + ": larger than " + std::to_string(kMaxConfigFileSize) + " bytes");
    }
  }
  ::close(fd);
  return parse(text, shown);
}

}  // namespace bus::config
