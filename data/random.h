// The random draws every data pipeline shares, on mt19937_64 streams seeded per sample (data/
// loader.h sample_seed), portable across standard libraries (no std::*_distribution, whose
// results differ between implementations).
#pragma once
#include <cstdint>
#include <random>

namespace hr::data {

// [0,1) from the top 53 bits.
double uniform01(std::mt19937_64& rng);
// Standard normal by the Box-Muller transform.
double standard_normal(std::mt19937_64& rng);
// Uniform in [0, n) by rejection.
uint64_t uniform_int(std::mt19937_64& rng, uint64_t n);
// splitmix64's finaliser: a well-mixed 64-bit hash of x.
uint64_t splitmix64(uint64_t x);

}  // namespace hr::data
