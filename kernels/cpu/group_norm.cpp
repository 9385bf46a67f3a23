// CPU group norm over [N, C, HW] (torch.nn.functional.group_norm): group g of sample n is the
// contiguous block of C/G channels x HW values at x[(n*C + g*C/G)*HW]. Statistics in double,
// two-pass; one (n, g) block per OpenMP iteration, and the parameter gradients one channel per
// iteration with a fixed order over n, so every result is the same for any thread count.
#include <cmath>
#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"

namespace hr::cpu {

void group_norm_forward(int64_t N, int64_t C, int64_t HW, int64_t G, const float* x,
                        const float* gamma, const float* beta, float eps, float* y, float* mean,
                        float* rstd) {
  const int64_t Cg = C / G, M = Cg * HW;
#pragma omp parallel for schedule(static) if (N * C * HW > (1 << 15))
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const int64_t n = ng / G, g = ng % G;
    const float* xb = x + (n * C + g * Cg) * HW;
    double s = 0;
    for (int64_t i = 0; i < M; ++i) s += xb[i];
    const double mu = s / double(M);
    double v = 0;
    for (int64_t i = 0; i < M; ++i) v += (xb[i] - mu) * (xb[i] - mu);
    const double r = 1.0 / std::sqrt(v / double(M) + double(eps));
    mean[ng] = float(mu);
    rstd[ng] = float(r);
    float* yb = y + (n * C + g * Cg) * HW;
    for (int64_t c = 0; c < Cg; ++c) {
      const float a = float(r * gamma[g * Cg + c]);
      const float b = float(beta[g * Cg + c] - mu * r * gamma[g * Cg + c]);
      for (int64_t i = 0; i < HW; ++i) yb[c * HW + i] = xb[c * HW + i] * a + b;
    }
  }
}

void group_norm_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const float* x,
                         const float* dy, const float* gamma, const float* mean, const float* rstd,
                         float* dx, float* dgamma, float* dbeta) {
  const int64_t Cg = C / G, M = Cg * HW;
  if (dx) {
#pragma omp parallel for schedule(static) if (N * C * HW > (1 << 15))
    for (int64_t ng = 0; ng < N * G; ++ng) {
      const int64_t n = ng / G, g = ng % G;
      const int64_t off = (n * C + g * Cg) * HW;
      const double mu = mean[ng], r = rstd[ng];
      // with xhat = (x - mu) * r and h = dy * gamma:
      // dx = r * (h - mean(h) - xhat * mean(h * xhat)) over the group
      double sh = 0, shx = 0;
      for (int64_t c = 0; c < Cg; ++c) {
        const double gm = gamma[g * Cg + c];
        for (int64_t i = 0; i < HW; ++i) {
          const int64_t j = off + c * HW + i;
          const double h = dy[j] * gm;
          sh += h;
          shx += h * (x[j] - mu) * r;
        }
      }
      const double mh = sh / double(M), mhx = shx / double(M);
      for (int64_t c = 0; c < Cg; ++c) {
        const double gm = gamma[g * Cg + c];
        for (int64_t i = 0; i < HW; ++i) {
          const int64_t j = off + c * HW + i;
          dx[j] = float(r * (dy[j] * gm - mh - (x[j] - mu) * r * mhx));
        }
      }
    }
  }
  if (!dgamma && !dbeta) return;
#pragma omp parallel for schedule(static) if (N * C * HW > (1 << 15))
  for (int64_t c = 0; c < C; ++c) {
    const int64_t g = c / Cg;
    double sg = 0, sb = 0;
    for (int64_t n = 0; n < N; ++n) {
      const double mu = mean[n * G + g], r = rstd[n * G + g];
      const float* xc = x + (n * C + c) * HW;
      const float* dyc = dy + (n * C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) {
        sg += dyc[i] * (xc[i] - mu) * r;
        sb += dyc[i];
      }
    }
    if (dgamma) dgamma[c] = float(sg);
    if (dbeta) dbeta[c] = float(sb);
  }
}

}  // namespace hr::cpu
