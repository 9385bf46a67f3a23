// CPU fully connected layer (torch.nn.Linear) through Eigen matrix products on the row-major
// buffers as stored; Eigen's GEMM runs on the OpenMP threads. Compiled once per instruction set
// (kernels/cpu/isa.h); kernels/cpu/dispatch.cpp defines the public functions.
#include <Eigen/Core>
#include <cstdint>

#include "kernels/cpu/isa.h"

namespace hr::cpu::HR_ISA_NS {
namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapC = Eigen::Map<const RowMat>;
using Map = Eigen::Map<RowMat>;
}  // namespace

// x [M,I], w [O,I], bias [O] or nullptr -> y [M,O]
void linear_forward(int64_t M, int64_t I, int64_t O, const float* x, const float* w,
                    const float* bias, float* y) {
  MapC X(x, M, I), Wt(w, O, I);
  Map Y(y, M, O);
  Y.noalias() = X * Wt.transpose();
  if (bias) Y.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(bias, O);
}

// x [M,I], w [O,I], dy [M,O] -> dx [M,I], dw [O,I], dbias [O] (each may be nullptr)
void linear_backward(int64_t M, int64_t I, int64_t O, const float* x, const float* w,
                     const float* dy, float* dx, float* dw, float* dbias) {
  MapC X(x, M, I), Wt(w, O, I), DY(dy, M, O);
  if (dx) Map(dx, M, I).noalias() = DY * Wt;
  if (dw) Map(dw, O, I).noalias() = DY.transpose() * X;
  if (dbias) {
#pragma omp parallel for schedule(static) if (M * O >= 65536)
    for (int64_t o = 0; o < O; ++o) {
      double s = 0;
      for (int64_t m = 0; m < M; ++m) s += dy[m * O + o];
      dbias[o] = float(s);
    }
  }
}

}  // namespace hr::cpu::HR_ISA_NS
