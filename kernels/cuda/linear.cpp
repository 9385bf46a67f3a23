// CUDA fully connected layer (torch.nn.Linear on row-major [M, I] inputs) through cublasGemmEx
// with fp32 accumulation, and batched products (bmm) through cublasGemmStridedBatchedEx; the
// fp32 bias is added by a row kernel, dbias is a column sum.
// f32 runs in true fp32 unless HR_ALLOW_TF32=1 (read once) permits TF32 tensor cores.
// One cuBLAS handle per device, guarded by a mutex; each call sets the stream and a workspace
// from the caching allocator on that stream, so concurrent streams never share a workspace.
#include <cublas_v2.h>

#include <climits>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "kernels/cuda/check.h"

namespace hr::cuda {
namespace {

constexpr size_t kWorkspace = size_t(32) << 20;  // cuBLAS's recommendation for Hopper

std::mutex g_mu;  // guards the handles and every call made with them

cublasHandle_t handle() {
  static auto* handles = new std::vector<cublasHandle_t>;
  const int d = detail::current_device();
  if (d >= int(handles->size())) handles->resize(d + 1, nullptr);
  if (!(*handles)[d]) CUBLAS_CHECK(cublasCreate(&(*handles)[d]));
  return (*handles)[d];
}

cudaDataType_t cuda_type(DT dt) {
  switch (dt) {
    case DT::f32: return CUDA_R_32F;
    case DT::f16: return CUDA_R_16F;
    case DT::bf16: return CUDA_R_16BF;
  }
  throw Error("linear: unknown dtype");
}

// Column-major C[m, n] = op(A) * op(B), fp32 accumulation, all matrices in dt.
void gemm(DT dt, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
          const void* A, int64_t lda, const void* B, int64_t ldb, void* C, int64_t ldc,
          Stream st) {
  if (m <= 0 || n <= 0) return;
  HR_CHECK(m < INT_MAX && n < INT_MAX && k < INT_MAX && lda < INT_MAX && ldb < INT_MAX &&
               ldc < INT_MAX,
           "linear: GEMM ", m, " x ", n, " x ", k, " exceeds cuBLAS's int range");
  const float alpha = 1.f, beta = 0.f;
  const cudaDataType_t t = cuda_type(dt);
  const cublasComputeType_t compute = dt == DT::f32 && detail::allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                    : CUBLAS_COMPUTE_32F;
  std::lock_guard<std::mutex> lock(g_mu);
  cublasHandle_t h = handle();
  detail::Workspace ws(kWorkspace, st);
  CUBLAS_CHECK(cublasSetStream(h, detail::stream_of(st)));
  CUBLAS_CHECK(cublasSetWorkspace(h, ws.get(), kWorkspace));
  CUBLAS_CHECK(cublasGemmEx(h, ta, tb, int(m), int(n), int(k), &alpha, A, t, int(lda), B, t,
                            int(ldb), &beta, C, t, int(ldc), compute, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

// x [M,I], w [O,I], bias [O] fp32 or nullptr -> y [M,O]
void linear_forward(DT dt, int64_t M, int64_t I, int64_t O, const void* x, const void* w,
                    const float* bias, void* y, Stream st) {
  // Row-major y[M,O] = x w^T is column-major y^T[O,M] = (w^T[I,O])^T x^T[I,M].
  gemm(dt, CUBLAS_OP_T, CUBLAS_OP_N, O, M, I, w, I, x, I, y, O, st);
  detail::add_bias_rows(dt, M, O, y, bias, st);
}

// x [M,I], w [O,I], dy [M,O] -> dx [M,I], dw [O,I], dbias [O] fp32 (each may be nullptr)
void linear_backward(DT dt, int64_t M, int64_t I, int64_t O, const void* x, const void* w,
                     const void* dy, void* dx, void* dw, float* dbias, Stream st) {
  // dx[M,I] = dy w: column-major dx^T[I,M] = w^T[I,O] dy^T[O,M]
  if (dx) gemm(dt, CUBLAS_OP_N, CUBLAS_OP_N, I, M, O, w, I, dy, O, dx, I, st);
  // dw[O,I] = dy^T x: column-major dw^T[I,O] = x^T[I,M] (dy^T[O,M])^T
  if (dw) gemm(dt, CUBLAS_OP_N, CUBLAS_OP_T, I, O, M, x, I, dy, O, dw, I, st);
  if (dbias) detail::column_sum(dt, 1, M, O, dy, 1.f, true, dbias, st);
}

// c[i] = op(a[i]) op(b[i]), row-major: column-major c^T[N,M] = op(b)^T op(a)^T, where a row-major
// [r, c] buffer is the column-major [c, r] matrix with leading dimension c.
void bmm(DT dt, int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
         const void* a, const void* b, void* c, Stream st) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  if (K == 0) {
    memset_zero(c, size_t(batch * M * N) * detail::dt_size(dt), st);
    return;
  }
  HR_CHECK(M < INT_MAX && N < INT_MAX && K < INT_MAX && batch < INT_MAX, "bmm: ", batch, " x ", M,
           " x ", N, " x ", K, " exceeds cuBLAS's int range");
  const float alpha = 1.f, beta = 0.f;
  const cudaDataType_t t = cuda_type(dt);
  const cublasComputeType_t compute = dt == DT::f32 && detail::allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                    : CUBLAS_COMPUTE_32F;
  std::lock_guard<std::mutex> lock(g_mu);
  cublasHandle_t h = handle();
  detail::Workspace ws(kWorkspace, st);
  CUBLAS_CHECK(cublasSetStream(h, detail::stream_of(st)));
  CUBLAS_CHECK(cublasSetWorkspace(h, ws.get(), kWorkspace));
  CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, int(N), int(M),
      int(K), &alpha, b, t, int(trans_b ? K : N), K * N, a, t, int(trans_a ? M : K), M * K, &beta,
      c, t, int(N), M * N, int(batch), compute, CUBLAS_GEMM_DEFAULT));
}

}  // namespace hr::cuda
