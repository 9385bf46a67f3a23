// Helpers shared by the tests: seeded random data and per-element comparison
// (|got - ref| <= atol + rtol*|ref|) that reports the first mismatches and the largest error.
#pragma once
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/error.h"

namespace hr::test {

inline std::vector<float> randn(size_t n, uint64_t seed, float stddev = 1.f, float mean = 0.f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline std::vector<float> uniform(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// The message of the hr::Error f throws, "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// s with the first `from` (which must be there) replaced by `to`.
inline std::string replace_once(std::string s, const std::string& from, const std::string& to) {
  const size_t p = s.find(from);
  REQUIRE(p != std::string::npos);
  return s.replace(p, from.size(), to);
}

// A file's bytes ("" when it cannot be read).
inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// A fresh directory under the system's temp directory (unique per process and object),
// removed with everything in it afterwards, read-only entries included.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int n = 0;
    path = std::filesystem::temp_directory_path() /
           ("hr_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// Sets an environment variable for a scope, restoring (or removing) it afterwards.
class EnvGuard {
 public:
  EnvGuard(const char* name, const char* value) : name_(name) {
    const char* o = std::getenv(name);
    had_ = o != nullptr;
    if (had_) old_ = o;
    setenv(name, value, 1);
  }
  ~EnvGuard() {
    if (had_)
      setenv(name_, old_.c_str(), 1);
    else
      unsetenv(name_);
  }
  EnvGuard(const EnvGuard&) = delete;
  EnvGuard& operator=(const EnvGuard&) = delete;

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

struct CompareResult {
  bool ok = true;
  size_t bad = 0;
  double max_abs = 0, max_rel = 0;
  std::string report;
};

// Compare got against ref element-wise. NaN in got never passes.
inline CompareResult compare(const float* got, const float* ref, size_t n, double atol,
                             double rtol, const std::string& what = "") {
  CompareResult r;
  std::ostringstream os;
  for (size_t i = 0; i < n; ++i) {
    double g = got[i], e = ref[i];
    double err = std::fabs(g - e);
    bool bad = !(err <= atol + rtol * std::fabs(e)) || std::isnan(g);
    if (err > r.max_abs || std::isnan(g)) r.max_abs = std::isnan(g) ? INFINITY : err;
    if (std::fabs(e) > 1e-12) r.max_rel = std::max(r.max_rel, err / std::fabs(e));
    if (bad) {
      if (r.bad < 5) os << "  [" << i << "] got " << g << " expected " << e << "\n";
      ++r.bad;
    }
  }
  r.ok = r.bad == 0;
  std::ostringstream head;
  head << what << ": " << r.bad << " of " << n << " elements off (atol " << atol << ", rtol "
       << rtol << "), max abs err " << r.max_abs << ", max rel err " << r.max_rel << "\n";
  r.report = head.str() + os.str();
  return r;
}

inline CompareResult compare(const std::vector<float>& got, const std::vector<float>& ref,
                             double atol, double rtol, const std::string& what = "") {
  if (got.size() != ref.size()) {
    CompareResult r;
    r.ok = false;
    r.report = what + ": size " + std::to_string(got.size()) + " vs " + std::to_string(ref.size());
    return r;
  }
  return compare(got.data(), ref.data(), got.size(), atol, rtol, what);
}

}  // namespace hr::test

// REQUIRE_CLOSE(got, ref, atol, rtol): vectors (or pointer+n via hr::test::compare) must match.
#define REQUIRE_CLOSE(got, ref, atol, rtol)                                   \
  do {                                                                        \
    auto hr_cmp_ = ::hr::test::compare((got), (ref), (atol), (rtol), #got);   \
    INFO(hr_cmp_.report);                                                     \
    REQUIRE(hr_cmp_.ok);                                                      \
  } while (0)
