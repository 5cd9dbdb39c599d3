// A throw-away PKI for TLS tests, made with the openssl CLI in a temporary directory: a CA, a
// second CA nobody trusts, busd server certificates ("busd-a", "busd-b"; SAN that name,
// localhost and 127.0.0.1), an agent certificate ("planner.remote"), one from the other CA (same CN) and an
// expired one ("old.agent", valid only on 2020-01-01, made with `openssl ca -startdate/-enddate`:
// OpenSSL 3.0's x509 has no -not_after). ~0.5 s. Without the openssl CLI the test exits 77.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace bus::test {

class Certs {
 public:
  Certs() {
    if (std::system("openssl version >/dev/null 2>&1") != 0) {
      std::printf("SKIP: no openssl command (Debian package openssl) to make test certificates\n");
      std::fflush(stdout);
      std::_Exit(77);
    }
    dir_ = std::filesystem::temp_directory_path() / ("busd-pki-" + std::to_string(::getpid()) + "-" + std::to_string(n()++));
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "gen.sh") << kScript;
    const std::string cmd = "cd '" + dir_.string() + "' && sh gen.sh >gen.log 2>&1";
    ok_ = std::system(cmd.c_str()) == 0;
  }
  ~Certs() {
    if (std::getenv("BUS_TEST_KEEP") == nullptr) std::filesystem::remove_all(dir_);
  }
  Certs(const Certs&) = delete;
  Certs& operator=(const Certs&) = delete;

  [[nodiscard]] bool ok() const { return ok_; }
  /// dir/name, e.g. path("ca.pem"), path("server.key").
  [[nodiscard]] std::string path(const std::string& name) const { return (dir_ / name).string(); }
  /// A [tls] table: this busd presents `who`.pem/.key, trusts ca.pem.
  [[nodiscard]] std::string tls_table(const std::string& who, bool agents, bool links, bool verify_peer = true) const {
    return "[tls]\ncert = \"" + path(who + ".pem") + "\"\nkey = \"" + path(who + ".key") + "\"\nca = \"" +
           path("ca.pem") + "\"\nverify_peer = " + (verify_peer ? "true" : "false") +
           "\nlisten_agents = " + (agents ? "true" : "false") + "\nlisten_links = " + (links ? "true" : "false") + "\n";
  }

 private:
  static int& n() {
    static int v = 0;
    return v;
  }
  static constexpr const char* kScript = R"(set -e
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
key ca.key
openssl req -x509 -new -key ca.key -out ca.pem -days 3 -subj "/CN=busd test CA"
key ca2.key
openssl req -x509 -new -key ca2.key -out ca2.pem -days 3 -subj "/CN=another CA"
leaf() {
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2"
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -out "$1.pem" -days 3 -extfile "$1.ext"
}
leaf server busd-a ca
leaf server_b busd-b ca
leaf agent planner.remote ca
leaf other worker.remote ca
leaf rogue planner.remote ca2
key expired.key
openssl req -new -key expired.key -out expired.csr -subj "/CN=old.agent"
mkdir -p newcerts
: > index.txt
echo 1000 > serial
cat > ca.cnf <<'X'
[ca]
default_ca = d
[d]
dir = .
database = index.txt
new_certs_dir = newcerts
serial = serial
default_md = sha256
policy = p
copy_extensions = copy
unique_subject = no
[p]
commonName = supplied
X
openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr -out expired.pem \
  -startdate 20200101000000Z -enddate 20200102000000Z -notext
)";
  std::filesystem::path dir_;
  bool ok_ = false;
};

}  // namespace bus::test
