// CPU batch norm over [N, C, HW] (channel c of sample n at x[(n*C + c)*HW + i]): training and
// inference forward and backward. Statistics are accumulated in double, two-pass, one channel
// per OpenMP iteration.
#include <cmath>
#include <cstdint>

#include "engine/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::cpu {
namespace {

// Channel c: sum over n of the HW-long row starting at x + (n*C + c)*HW.
double channel_sum(int64_t N, int64_t C, int64_t HW, int64_t c, const float* x) {
  double s = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* r = x + (n * C + c) * HW;
    double sr = 0;
#pragma omp simd reduction(+ : sr)
    for (int64_t i = 0; i < HW; ++i) sr += r[i];
    s += sr;
  }
  return s;
}

// Channel c: sum of (x - mean)^2.
double channel_sq_dev(int64_t N, int64_t C, int64_t HW, int64_t c, const float* x, double mean) {
  double s = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* r = x + (n * C + c) * HW;
    double sr = 0;
#pragma omp simd reduction(+ : sr)
    for (int64_t i = 0; i < HW; ++i) {
      double d = r[i] - mean;
      sr += d * d;
    }
    s += sr;
  }
  return s;
}

// Channel c: sum(dy) and sum(dy * (x - mean)).
void channel_grad_sums(int64_t N, int64_t C, int64_t HW, int64_t c, const float* x,
                       const float* dy, double mean, double* sum_dy, double* sum_dy_xc) {
  double a = 0, b = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + (n * C + c) * HW;
    const float* gr = dy + (n * C + c) * HW;
    double ar = 0, br = 0;
#pragma omp simd reduction(+ : ar, br)
    for (int64_t i = 0; i < HW; ++i) {
      ar += gr[i];
      br += gr[i] * (xr[i] - mean);
    }
    a += ar;
    b += br;
  }
  *sum_dy = a;
  *sum_dy_xc = b;
}

// y = (x - shift) * mul + add on channel c. The shift is split into two floats (hi + lo) so a
// mean far from zero keeps its full double precision: x - hi is exact when x is near hi.
void channel_affine(int64_t N, int64_t C, int64_t HW, int64_t c, const float* x, double shift,
                    float mul, float add, float* y) {
  const float hi = float(shift), lo = float(shift - double(hi));
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + (n * C + c) * HW;
    float* yr = y + (n * C + c) * HW;
#pragma omp simd
    for (int64_t i = 0; i < HW; ++i) yr[i] = ((xr[i] - hi) - lo) * mul + add;
  }
}

bool parallel_channels(int64_t N, int64_t C, int64_t HW) { return C > 1 && N * C * HW >= 4096; }

}  // namespace

// x [N,C,HW], gamma/beta [C] -> y [N,C,HW], save_mean/save_invstd [C];
// running_mean/running_var [C] updated in place (either may be nullptr).
void batchnorm_train_forward(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma,
                             const float* beta, float eps, float momentum, float* running_mean,
                             float* running_var, float* y, float* save_mean, float* save_invstd) {
  const int64_t count = N * HW;
  HR_CHECK(count > 1, "batchnorm_train_forward: expected more than 1 value per channel when "
           "training, got N=", N, " HW=", HW, " (C=", C, ")");
#pragma omp parallel for schedule(dynamic, 1) if (parallel_channels(N, C, HW))
  for (int64_t c = 0; c < C; ++c) {
    const double mean = channel_sum(N, C, HW, c, x) / double(count);
    const double var = channel_sq_dev(N, C, HW, c, x, mean) / double(count);
    const double invstd = 1.0 / std::sqrt(var + double(eps));
    if (running_mean)
      running_mean[c] = float((1.0 - momentum) * running_mean[c] + double(momentum) * mean);
    if (running_var) {
      const double unbiased = var * double(count) / double(count - 1);
      running_var[c] = float((1.0 - momentum) * running_var[c] + double(momentum) * unbiased);
    }
    if (save_mean) save_mean[c] = float(mean);
    if (save_invstd) save_invstd[c] = float(invstd);
    channel_affine(N, C, HW, c, x, mean, float(invstd * gamma[c]), beta[c], y);
  }
}

// x [N,C,HW], gamma/beta/running_mean/running_var [C] -> y [N,C,HW]
void batchnorm_infer_forward(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma,
                             const float* beta, const float* running_mean,
                             const float* running_var, float eps, float* y) {
#pragma omp parallel for schedule(static) if (parallel_channels(N, C, HW))
  for (int64_t c = 0; c < C; ++c) {
    const double invstd = 1.0 / std::sqrt(double(running_var[c]) + double(eps));
    channel_affine(N, C, HW, c, x, running_mean[c], float(invstd * gamma[c]), beta[c], y);
  }
}

// x, dy [N,C,HW], gamma/save_mean/save_invstd [C] -> dx [N,C,HW], dgamma/dbeta [C]
void batchnorm_train_backward(int64_t N, int64_t C, int64_t HW, const float* x, const float* dy,
                              const float* gamma, const float* save_mean, const float* save_invstd,
                              float* dx, float* dgamma, float* dbeta) {
  const double count = double(N * HW);
#pragma omp parallel for schedule(dynamic, 1) if (parallel_channels(N, C, HW))
  for (int64_t c = 0; c < C; ++c) {
    const double mean = save_mean[c], invstd = save_invstd[c];
    double sum_dy, sum_dy_xc;
    channel_grad_sums(N, C, HW, c, x, dy, mean, &sum_dy, &sum_dy_xc);
    if (dgamma) dgamma[c] = float(sum_dy_xc * invstd);
    if (dbeta) dbeta[c] = float(sum_dy);
    if (!dx) continue;
    // dx = gamma*invstd * (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x - mean)))
    const float k = float(gamma[c] * invstd);
    const float mean_dy = float(sum_dy / count);
    const float proj = float(sum_dy_xc / count * invstd * invstd);
    const float m = float(mean);
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = x + (n * C + c) * HW;
      const float* gr = dy + (n * C + c) * HW;
      float* dr = dx + (n * C + c) * HW;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) dr[i] = k * (gr[i] - mean_dy - (xr[i] - m) * proj);
    }
  }
}

// x, dy [N,C,HW], gamma/running_mean/running_var [C] -> dx [N,C,HW], dgamma/dbeta [C]
void batchnorm_infer_backward(int64_t N, int64_t C, int64_t HW, const float* x, const float* dy,
                              const float* gamma, const float* running_mean,
                              const float* running_var, float eps, float* dx, float* dgamma,
                              float* dbeta) {
#pragma omp parallel for schedule(dynamic, 1) if (parallel_channels(N, C, HW))
  for (int64_t c = 0; c < C; ++c) {
    const double invstd = 1.0 / std::sqrt(double(running_var[c]) + double(eps));
    if (dgamma || dbeta) {
      double sum_dy, sum_dy_xc;
      channel_grad_sums(N, C, HW, c, x, dy, running_mean[c], &sum_dy, &sum_dy_xc);
      if (dgamma) dgamma[c] = float(sum_dy_xc * invstd);
      if (dbeta) dbeta[c] = float(sum_dy);
    }
    if (!dx) continue;
    const float k = float(gamma[c] * invstd);
    for (int64_t n = 0; n < N; ++n) {
      const float* gr = dy + (n * C + c) * HW;
      float* dr = dx + (n * C + c) * HW;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) dr[i] = k * gr[i];
    }
  }
}

}  // namespace hr::cpu
