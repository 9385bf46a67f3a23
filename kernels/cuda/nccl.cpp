// NCCL for the data-parallel reducer (kernels/cuda/nccl.h). A null Stream is the engine's default
// stream, as for every kernel (detail::stream_of), never CUDA's legacy stream 0.
#include "kernels/cuda/nccl.h"

#include <cstring>

#include "engine/error.h"

#ifdef HR_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include "kernels/cuda/check.h"
#endif

namespace hr::cuda {

#ifdef HR_WITH_NCCL
namespace {
void check(ncclResult_t r, const char* call) {
  if (r != ncclSuccess)
    throw Error(str_cat(call, " failed: ", ncclGetErrorString(r), " (", ncclGetLastError(nullptr),
                        ")"));
}
ncclDataType_t nccl_type(DT dt) {
  return dt == DT::f32 ? ncclFloat32 : dt == DT::f16 ? ncclFloat16 : ncclBfloat16;
}
}  // namespace

bool nccl_built() { return true; }

void nccl_unique_id(void* id) {
  static_assert(sizeof(ncclUniqueId) == kNcclIdBytes, "ncclUniqueId size");
  ncclUniqueId u;
  check(ncclGetUniqueId(&u), "ncclGetUniqueId");
  std::memcpy(id, &u, sizeof u);
}

void* nccl_init(const void* id, int rank, int size) {
  ncclUniqueId u;
  std::memcpy(&u, id, sizeof u);
  ncclComm_t comm = nullptr;
  check(ncclCommInitRank(&comm, size, u, rank), "ncclCommInitRank");
  return comm;
}

void nccl_group_start() { check(ncclGroupStart(), "ncclGroupStart"); }
void nccl_group_end() { check(ncclGroupEnd(), "ncclGroupEnd"); }

void nccl_all_reduce_out(void* comm, const void* in, void* out, int64_t n, DT dt, bool average,
                         Stream s) {
  check(ncclAllReduce(in, out, static_cast<size_t>(n), nccl_type(dt), average ? ncclAvg : ncclSum,
                      static_cast<ncclComm_t>(comm), detail::stream_of(s)),
        "ncclAllReduce");
}

void nccl_all_reduce_f64(void* comm, double* data, int64_t n, Stream s) {
  check(ncclAllReduce(data, data, static_cast<size_t>(n), ncclFloat64, ncclSum,
                      static_cast<ncclComm_t>(comm), detail::stream_of(s)),
        "ncclAllReduce");
}
#else
namespace {
[[noreturn]] void none(const char* what) {
  throw Error(str_cat(what, ": this build has no NCCL (CUDA's libnccl was not found when it was "
                      "configured)"));
}
}  // namespace
bool nccl_built() { return false; }
void nccl_unique_id(void*) { none("nccl_unique_id"); }
void* nccl_init(const void*, int, int) { none("nccl_init"); }
void nccl_group_start() { none("nccl_group_start"); }
void nccl_group_end() { none("nccl_group_end"); }
void nccl_all_reduce_f64(void*, double*, int64_t, Stream) { none("nccl_all_reduce_f64"); }
void nccl_all_reduce_out(void*, const void*, void*, int64_t, DT, bool, Stream) {
  none("nccl_all_reduce_out");
}
#endif

}  // namespace hr::cuda
