// Standalone driver for the fuzz targets when they are not linked with libFuzzer (the default
// build): runs LLVMFuzzerTestOneInput over every file given (directories: every file in them,
// recursively, in sorted order), then over deterministic pseudo-random mutations of each file.
//
//   fuzz_X [-mutations=N] [-seed=S] [-max_len=L] FILE|DIR...
//
// Same seed, same files: same inputs, on every machine (own PRNG, no std distributions). Each
// input is handed over in a heap block of exactly its size, so ASan builds catch over-reads.
// A failing check aborts (so do sanitizer reports, through their death callback); the driver
// then writes the input it was running to ./<program>-crash.bin. Replay one file (a reproducer,
// or a crash file libFuzzer wrote) with: fuzz_X -mutations=0 FILE.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
// Set when a sanitizer runtime is linked in (weak: null otherwise).
extern "C" void __sanitizer_set_death_callback(void (*callback)()) __attribute__((weak));

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

struct Rng {  // splitmix64
  uint64_t s;
  uint64_t next() noexcept {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) noexcept { return n == 0 ? 0 : static_cast<size_t>(next() % n); }
};

// The input being run, for the crash handlers (written before each run, read only there).
const uint8_t* g_current = nullptr;
size_t g_current_size = 0;
std::string g_crash_path;

void dump_current() {
  static bool done = false;
  if (done || g_current == nullptr) return;
  done = true;
  const int fd = ::open(g_crash_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  size_t off = 0;
  while (off < g_current_size) {
    const ssize_t w = ::write(fd, g_current + off, g_current_size - off);
    if (w <= 0) break;
    off += static_cast<size_t>(w);
  }
  ::close(fd);
  const char msg[] = "replay: the failing input was written to ";
  (void)!::write(2, msg, sizeof msg - 1);
  (void)!::write(2, g_crash_path.c_str(), g_crash_path.size());
  (void)!::write(2, "\n", 1);
}

extern "C" void on_fatal_signal(int sig) {
  dump_current();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void install_crash_handlers() {
  if (__sanitizer_set_death_callback != nullptr) __sanitizer_set_death_callback(dump_current);
  struct sigaction sa {};
  sa.sa_handler = on_fatal_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) ::sigaction(sig, &sa, nullptr);
}

void run(const Bytes& input) {
  // Exactly sized copy; new[] of 0 bytes still gives a unique pointer nothing may read.
  const std::unique_ptr<uint8_t[]> copy(new uint8_t[input.size()]);
  if (!input.empty()) std::memcpy(copy.get(), input.data(), input.size());
  g_current = copy.get();
  g_current_size = input.size();
  LLVMFuzzerTestOneInput(copy.get(), input.size());
  g_current = nullptr;
}

void put_le(Bytes& b, size_t at, uint64_t v, size_t n) {
  for (size_t i = 0; i < n && at + i < b.size(); ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t get_le(const Bytes& b, size_t at, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n && at + i < b.size(); ++i) v |= uint64_t{b[at + i]} << (8 * i);
  return v;
}

// One mutation, in the spirit of libFuzzer's: bit and byte flips, interesting integers (also
// as FlatBuffers offsets and lengths: near the input size), inserts, erases, copies, splices.
void mutate_once(Bytes& b, const std::vector<Bytes>& all, Rng& rng, size_t max_len) {
  static constexpr uint64_t kInteresting[] = {0,          1,          2,           4,
                                              7,          8,          0x7F,        0x80,
                                              0xFF,       0x100,      0x7FFF,      0x8000,
                                              0xFFFF,     0x10000,    0x7FFFFFFF,  0x80000000,
                                              0xFFFFFFFF, ~0ull >> 1, ~0ull,       ~0ull - 7};
  const size_t n = b.size();
  switch (rng.below(n == 0 ? 1 : 10)) {
    case 0: {  // insert 1..16 random bytes (the only choice for an empty input)
      const size_t at = rng.below(n + 1);
      const size_t k = 1 + rng.below(16);
      Bytes ins(k);
      for (auto& x : ins) x = static_cast<uint8_t>(rng.next());
      b.insert(b.begin() + static_cast<ptrdiff_t>(at), ins.begin(), ins.end());
      break;
    }
    case 1: b[rng.below(n)] ^= static_cast<uint8_t>(1u << rng.below(8)); break;
    case 2: b[rng.below(n)] = static_cast<uint8_t>(rng.next()); break;
    case 3: {
      const size_t width = size_t{1} << rng.below(4);  // 1, 2, 4, 8 bytes
      size_t at = rng.below(n);
      if (rng.below(2) == 0) at &= ~(width - 1);  // aligned, like most FlatBuffers fields
      uint64_t v = kInteresting[rng.below(std::size(kInteresting))];
      if (rng.below(3) == 0) v = n - rng.below(16) - at;  // an offset to near the end
      put_le(b, at, v, width);
      break;
    }
    case 4: {  // add or subtract a little
      const size_t width = size_t{1} << rng.below(4);
      const size_t at = rng.below(n) & ~(width - 1);
      const uint64_t delta = 1 + rng.below(16);
      const uint64_t v = get_le(b, at, width);
      put_le(b, at, rng.below(2) == 0 ? v + delta : v - delta, width);
      break;
    }
    case 5: {  // erase a range
      const size_t at = rng.below(n);
      const size_t k = 1 + rng.below(std::min<size_t>(n - at, 32));
      b.erase(b.begin() + static_cast<ptrdiff_t>(at), b.begin() + static_cast<ptrdiff_t>(at + k));
      break;
    }
    case 6: b.resize(rng.below(n)); break;  // truncate
    case 7: {  // copy a chunk over another place
      const size_t from = rng.below(n);
      const size_t to = rng.below(n);
      const size_t k = 1 + rng.below(std::min<size_t>(n - std::max(from, to), 64));
      std::memmove(b.data() + to, b.data() + from, k);
      break;
    }
    case 8: {  // splice: a chunk of another corpus file
      const Bytes& o = all[rng.below(all.size())];
      if (o.empty()) break;
      const size_t from = rng.below(o.size());
      const size_t k = 1 + rng.below(std::min<size_t>(o.size() - from, 64));
      const size_t at = rng.below(n + 1);
      if (rng.below(2) == 0) {
        b.insert(b.begin() + static_cast<ptrdiff_t>(at), o.begin() + static_cast<ptrdiff_t>(from),
                 o.begin() + static_cast<ptrdiff_t>(from + k));
      } else {
        for (size_t i = 0; i < k && at + i < n; ++i) b[at + i] = o[from + i];
      }
      break;
    }
    default: {  // duplicate a chunk at the end
      const size_t from = rng.below(n);
      const size_t k = 1 + rng.below(std::min<size_t>(n - from, 64));
      const Bytes chunk(b.begin() + static_cast<ptrdiff_t>(from),
                        b.begin() + static_cast<ptrdiff_t>(from + k));
      b.insert(b.end(), chunk.begin(), chunk.end());
      break;
    }
  }
  if (b.size() > max_len) b.resize(max_len);
}

bool read_file(const fs::path& p, Bytes& out) {
  std::ifstream f(p, std::ios::binary);
  if (!f) return false;
  out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  return true;
}

bool flag(std::string_view arg, std::string_view name, uint64_t& value) {
  if (!arg.starts_with(name)) return false;
  value = std::strtoull(std::string(arg.substr(name.size())).c_str(), nullptr, 0);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t mutations = 2000;
  uint64_t seed = 0x5EED;
  uint64_t max_len = 64 * 1024;
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a(argv[i]);
    if (flag(a, "-mutations=", mutations) || flag(a, "-seed=", seed) ||
        flag(a, "-max_len=", max_len)) {
      continue;
    }
    if (a.starts_with("-")) {
      std::fprintf(stderr, "%s: unknown option %s\n", argv[0], argv[i]);
      return 2;
    }
    std::error_code ec;
    if (fs::is_directory(a, ec)) {
      std::vector<fs::path> found;
      for (const auto& e : fs::recursive_directory_iterator(a)) {
        if (e.is_regular_file()) found.push_back(e.path());
      }
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.emplace_back(a);
    }
  }
  std::vector<Bytes> inputs(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    if (!read_file(files[i], inputs[i])) {
      std::fprintf(stderr, "%s: cannot read %s\n", argv[0], files[i].c_str());
      return 2;
    }
  }
  if (inputs.empty()) {
    std::fprintf(stderr, "usage: %s [-mutations=N] [-seed=S] [-max_len=L] FILE|DIR...\n"
                         "(no input files found)\n", argv[0]);
    return 2;
  }

  g_crash_path = fs::path(argv[0]).filename().string() + "-crash.bin";
  install_crash_handlers();
  const auto start = std::chrono::steady_clock::now();
  uint64_t runs = 0;
  Rng rng{seed};
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::fprintf(stderr, "running %s\n", files[i].c_str());
    run(inputs[i]);
    ++runs;
    for (uint64_t m = 0; m < mutations; ++m) {
      Bytes b = inputs[i];
      const size_t stack = 1 + rng.below(4);
      for (size_t k = 0; k < stack; ++k) mutate_once(b, inputs, rng, max_len);
      run(b);
      ++runs;
    }
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start).count();
  std::printf("%s: ran %llu inputs (%zu files + %llu mutations each, seed %llu) in %lld ms\n",
              argv[0], static_cast<unsigned long long>(runs), inputs.size(),
              static_cast<unsigned long long>(mutations), static_cast<unsigned long long>(seed),
              static_cast<long long>(ms));
  return 0;
}
