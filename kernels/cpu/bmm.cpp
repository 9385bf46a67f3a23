// CPU batched matrix product through Eigen on the row-major buffers as stored (transposes are
// Eigen expressions, never copies). Many small products run one per OpenMP thread; otherwise the
// batches run in turn with Eigen's GEMM on the OpenMP threads.
#include <omp.h>

#include <Eigen/Core>
#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"

namespace hr::cpu {
namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapC = Eigen::Map<const RowMat>;
using Map = Eigen::Map<RowMat>;

void one(int64_t M, int64_t N, int64_t K, bool ta, bool tb, const float* a, const float* b,
         float* c) {
  MapC A(a, ta ? K : M, ta ? M : K), B(b, tb ? N : K, tb ? K : N);
  Map C(c, M, N);
  if (!ta && !tb) C.noalias() = A * B;
  else if (!ta) C.noalias() = A * B.transpose();
  else if (!tb) C.noalias() = A.transpose() * B;
  else C.noalias() = A.transpose() * B.transpose();
}
}  // namespace

void bmm(int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
         const float* a, const float* b, float* c) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < batch * M * N; ++i) c[i] = 0.f;
    return;
  }
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const bool per_thread = batch >= threads && M * N * K <= (int64_t(1) << 22);
#pragma omp parallel for schedule(static) if (per_thread && threads > 1)
  for (int64_t i = 0; i < batch; ++i)
    one(M, N, K, trans_a, trans_b, a + i * M * K, b + i * K * N, c + i * M * N);
}

}  // namespace hr::cpu
