// What the seed-corpus generators (make_corpus*.cpp) share: writing OUTDIR/<target>/<name>
// (each seed under 16 KiB: a counters page with its histograms is ~11 KiB), failing loudly, and
// their main().
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace bus::corpus {

using Bytes = std::vector<uint8_t>;

struct State {
  std::filesystem::path out;
  int written = 0;
  const char* program = "make_corpus";
};
inline State& state() {
  static State s;
  return s;
}

inline void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "%s: %s\n", state().program, what);
    std::exit(1);
  }
}

inline void write_seed(const std::string& target, const std::string& name, const Bytes& b) {
  if (b.size() >= 16384) {
    std::fprintf(stderr, "%s: seed %s/%s is %zu bytes (limit 16 KiB)\n", state().program,
                 target.c_str(), name.c_str(), b.size());
    std::exit(1);
  }
  std::filesystem::create_directories(state().out / target);
  std::ofstream f(state().out / target / name, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  require(f.good(), ("cannot write " + target + "/" + name).c_str());
  ++state().written;
}

/// main() of a generator: `generate` writes the seeds under argv[1].
template <class F>
int run(int argc, char** argv, const char* program, F&& generate) {
  state().program = program;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
    return 2;
  }
  state().out = argv[1];
  generate();
  std::printf("%s: wrote %d seed files under %s\n", program, state().written, argv[1]);
  return 0;
}

}  // namespace bus::corpus
