// What busbench's RDMA runs need besides busd (`--transport rdma`): whether this host can run an
// RDMA link at all (a verbs device; a busbench built with libibverbs and librdmacm), and the
// address the RDMA-linked pair uses (rdma_cm picks the device by it).
#pragma once

#include <string>

namespace bus::bench {

/// "" when an RDMA link can run here; otherwise why not, in one line: rdma::device_problem()
/// ("ibv_get_device_list: Function not implemented (errno 38, ENOSYS): this kernel has no RDMA
/// (InfiniBand) support, ..."), or that this busbench was built without RDMA.
[[nodiscard]] std::string rdma_problem();

/// The address of the RDMA interface both busd of the RDMA pair use: `given` (--rdma-addr), else
/// $BUS_RDMA_ADDR, else the first non-loopback IPv4 address of this host (127.0.0.1 if none), as
/// the RDMA integration tests pick it.
[[nodiscard]] std::string rdma_address(const std::string& given);

}  // namespace bus::bench
