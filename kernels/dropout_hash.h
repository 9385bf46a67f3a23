// The counter-based generator of the dropout masks, shared by the CPU and CUDA kernels so that
// both draw the same mask for the same (seed, step, sample, channel): no generator state besides
// the step counter, so a mask can be drawn anywhere, in any order, inside a captured CUDA graph.
#pragma once
#include <cstdint>

#include "kernels/host_device.h"

namespace hr::kern {

// SplitMix64's finaliser (Steele, Lea, Flood 2014): a bijection of 64-bit words with good
// avalanche.
HR_HOST_DEVICE uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// A uniform draw in [0, 1) with 24 bits (exact in float) for channel c of sample n at `step`.
HR_HOST_DEVICE float dropout_uniform(uint64_t seed, uint64_t step, uint64_t n, uint64_t c) {
  const uint64_t h =
      splitmix64(splitmix64(splitmix64(seed) ^ step) ^ ((n << 32) | (c & 0xffffffffull)));
  return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
}

// The mask value of one channel: 0 (dropped, with probability p) or `scale` = 1 / (1 - p).
HR_HOST_DEVICE float dropout_keep(uint64_t seed, uint64_t step, uint64_t n, uint64_t c, float p,
                                  float scale) {
  return dropout_uniform(seed, step, n, c) >= p ? scale : 0.f;
}

}  // namespace hr::kern
