#include "rdma_kit.hpp"

#if BUSBENCH_HAVE_RDMA
#include "rdma/ibv_verbs.hpp"
#endif

namespace bus::bench {

std::string rdma_problem() {
#if BUSBENCH_HAVE_RDMA
  return rdma::device_problem();
#else
  return "this busbench (and busd) was built without RDMA: install libibverbs-dev and librdmacm-dev, then meson "
         "setup --reconfigure and rebuild";
#endif
}

std::string rdma_address(const std::string& given) {
  if (!given.empty()) return given;
#if BUSBENCH_HAVE_RDMA
  return rdma::default_address();
#else
  return "127.0.0.1";  // never used: rdma_problem() stops the run first
#endif
}

}  // namespace bus::bench
