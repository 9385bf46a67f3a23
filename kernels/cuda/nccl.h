// NCCL, as the engine's data-parallel reducer (engine/dist.h) uses it on CUDA: a communicator per
// process (one device each), bootstrapped from a unique id that rank 0 makes and MPI broadcasts,
// and in-place all-reduces enqueued on a stream (capturable into a CUDA graph). No NCCL header
// is needed here; builds without NCCL (or without CUDA) throw "... built without NCCL".
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"

namespace hr::cuda {

constexpr size_t kNcclIdBytes = 128;  // sizeof(ncclUniqueId)
bool nccl_built();
void nccl_unique_id(void* id);                          // rank 0: kNcclIdBytes into id
// On the current device; blocks until every rank joins. Kept for the life of the process.
void* nccl_init(const void* id, int rank, int size);
// Several all-reduces as one NCCL group (one launch where NCCL can fuse them).
void nccl_group_start();
void nccl_group_end();
// n values of dt on this device from `in`, summed or averaged (ncclAvg) over the ranks, into
// `out` (may be the same buffer: in place), on stream s.
void nccl_all_reduce_out(void* comm, const void* in, void* out, int64_t n, DT dt, bool average,
                         Stream s);
// n doubles on this device summed over the ranks, in place (synchronised batch norm's sums).
void nccl_all_reduce_f64(void* comm, double* data, int64_t n, Stream s);

}  // namespace hr::cuda
