// CUDA runtime (kernels/cuda/runtime.cpp): device queries, the engine's streams and events,
// copies, the caching allocator (steady-state reuse with no new cudaMalloc, same-stream
// immediate reuse, cross-stream safety, statistics, empty_cache) and error messages that name
// file:line and the failing call. Uses only hr::cuda's API, so it also compiles without CUDA.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/error.h"
#include "kernels/cuda/cuda_kernels.h"
#include "test_util.h"

namespace cu = hr::cuda;
using Catch::Matchers::Contains;

namespace {

std::vector<float> download_f32(const void* p, size_t n, cu::Stream s) {
  std::vector<float> v(n);
  cu::memcpy_d2h(v.data(), p, n * sizeof(float), s);
  return v;
}

}  // namespace

TEST_CASE("runtime: device queries and the engine's default stream", "[gpu][runtime]") {
  REQUIRE(cu::available());
  REQUIRE(cu::device_count() >= 1);
  REQUIRE_FALSE(cu::device_name(0).empty());
  const cu::Stream s = cu::default_stream();
  REQUIRE(s != nullptr);  // never the legacy stream 0
  REQUIRE(cu::default_stream() == s);
}

TEST_CASE("runtime: copies and memset round-trip", "[gpu][runtime]") {
  const cu::Stream s = cu::default_stream();
  const std::vector<float> h = hr::test::randn(1027, 1);
  void* a = cu::alloc(h.size() * 4, s);
  void* b = cu::alloc(h.size() * 4, s);
  cu::memcpy_h2d(a, h.data(), h.size() * 4, s);
  cu::memcpy_d2d(b, a, h.size() * 4, s);
  REQUIRE(download_f32(b, h.size(), s) == h);
  cu::memset_zero(b, 400, s);  // the first 100 floats
  std::vector<float> z = download_f32(b, h.size(), s);
  for (size_t i = 0; i < h.size(); ++i) REQUIRE(z[i] == (i < 100 ? 0.f : h[i]));
  cu::free(a, s);
  cu::free(b, s);
}

TEST_CASE("allocator: statistics, rounding and empty_cache", "[gpu][runtime][alloc]") {
  const cu::Stream s = cu::default_stream();
  const size_t base = cu::allocated_bytes();
  void* p = cu::alloc(1000, s);
  REQUIRE(p != nullptr);
  REQUIRE(reinterpret_cast<uintptr_t>(p) % 256 == 0);
  REQUIRE(cu::allocated_bytes() == base + 1000);
  REQUIRE(cu::peak_allocated_bytes() >= base + 1000);
  REQUIRE(cu::reserved_bytes() >= cu::allocated_bytes());
  void* q = cu::alloc(3 * 1000 * 1000 + 7, s);
  REQUIRE(cu::allocated_bytes() == base + 1000 + 3000007);
  const size_t peak = cu::peak_allocated_bytes();
  REQUIRE(peak >= base + 3001007);
  cu::free(q, s);
  REQUIRE(cu::allocated_bytes() == base + 1000);
  REQUIRE(cu::peak_allocated_bytes() == peak);
  REQUIRE(cu::alloc(0, s) == nullptr);
  cu::free(nullptr, s);

  // empty_cache returns the cached blocks but keeps live ones usable.
  const std::vector<float> h = hr::test::randn(250, 2);
  cu::memcpy_h2d(p, h.data(), 1000, s);
  const size_t reserved_before = cu::reserved_bytes();
  cu::empty_cache();
  REQUIRE(cu::reserved_bytes() < reserved_before);  // at least q's block went back
  REQUIRE(cu::reserved_bytes() >= cu::allocated_bytes());
  REQUIRE(download_f32(p, 250, s) == h);
  cu::free(p, s);
  REQUIRE(cu::allocated_bytes() == base);
}

TEST_CASE("allocator: steady state makes no new cudaMalloc", "[gpu][runtime][alloc]") {
  const cu::Stream s = cu::create_stream();
  const size_t sizes[] = {17, 512, 4096, 65537, 1 << 20, 3000001, 12345678};
  size_t reserved_after_first = 0;
  for (int it = 0; it < 40; ++it) {
    std::vector<void*> ptrs;
    for (size_t n : sizes) {
      void* p = cu::alloc(n, s);
      cu::fill(cu::DT::f32, int64_t(n / 4), float(it), p, s);
      ptrs.push_back(p);
    }
    for (void* p : ptrs) cu::free(p, s);
    if (it == 0) reserved_after_first = cu::reserved_bytes();
    INFO("iteration " << it);
    REQUIRE(cu::reserved_bytes() == reserved_after_first);
  }
  // Same stream: the block just freed is handed back at once, even with work pending on it.
  void* p = cu::alloc(777777, s);
  cu::fill(cu::DT::f32, 777777 / 4, 1.f, p, s);
  cu::free(p, s);
  void* p2 = cu::alloc(777777, s);
  REQUIRE(p2 == p);
  cu::free(p2, s);
  cu::synchronize(s);
  cu::destroy_stream(s);
}

TEST_CASE("allocator: a block freed on one stream is not reused early by another",
          "[gpu][runtime][alloc]") {
  const cu::Stream a = cu::create_stream();
  const cu::Stream b = cu::create_stream();
  const size_t bytes = (size_t(64) << 20) + 4096 * 3;  // a size class no other test uses
  const int64_t n = int64_t(bytes / 4);
  void* big = cu::alloc(bytes, a);
  // ~100 ms of work on stream a writing 1s into big, still running when it is freed.
  for (int i = 0; i < 2000; ++i) cu::fill(cu::DT::f32, n, 1.f, big, a);
  cu::free(big, a);
  void* other = cu::alloc(bytes, b);
  REQUIRE(other != big);
  cu::fill(cu::DT::f32, n, 2.f, other, b);
  cu::synchronize(a);
  cu::synchronize(b);
  const std::vector<float> v = download_f32(other, size_t(n), b);
  size_t wrong = 0;
  for (float x : v) wrong += x != 2.f;
  REQUIRE(wrong == 0);
  // Once a's event has completed, b may take the block: no new cudaMalloc.
  const size_t reserved = cu::reserved_bytes();
  void* again = cu::alloc(bytes, b);
  REQUIRE(cu::reserved_bytes() == reserved);
  REQUIRE(again == big);
  cu::free(again, b);
  cu::free(other, b);
  cu::synchronize(b);
  cu::destroy_stream(a);
  cu::destroy_stream(b);
}

TEST_CASE("runtime: events order work across streams", "[gpu][runtime]") {
  const cu::Stream a = cu::create_stream();
  const cu::Stream b = cu::create_stream();
  const cu::Event e = cu::create_event();
  const int64_t n = int64_t(16) << 20;
  void* buf = cu::alloc(size_t(n) * 4, a);
  for (int i = 0; i < 200; ++i) cu::fill(cu::DT::f32, n, 1.f, buf, a);
  cu::record_event(e, a);
  cu::wait_event(b, e);
  cu::scale(cu::DT::f32, n, 3.f, buf, buf, b);  // must see a's 1s
  cu::synchronize(b);
  const std::vector<float> v = download_f32(buf, size_t(n), b);
  size_t wrong = 0;
  for (float x : v) wrong += x != 3.f;
  REQUIRE(wrong == 0);
  cu::free(buf, b);
  cu::synchronize(b);
  cu::destroy_event(e);
  cu::destroy_stream(a);
  cu::destroy_stream(b);
}

TEST_CASE("runtime: failing calls throw with file:line and the call", "[gpu][runtime][provokes-errors]") {
  REQUIRE_THROWS_WITH(cu::device_name(cu::device_count() + 7),
                      Contains("kernels/cuda/runtime.cpp:") &&
                          Contains("cudaGetDeviceProperties") &&
                          Contains("cudaErrorInvalidDevice"));
  REQUIRE_THROWS_AS(cu::device_name(-1), hr::Error);
  // Out of memory names the request and leaves the allocator usable.
  REQUIRE_THROWS_WITH(cu::alloc(size_t(1) << 50, cu::default_stream()),
                      Contains("cuda::alloc: cannot allocate 1125899906842624 bytes"));
  void* p = cu::alloc(4096, cu::default_stream());
  REQUIRE(p != nullptr);
  cu::free(p, cu::default_stream());
  int host = 0;
  REQUIRE_THROWS_WITH(cu::free(&host, cu::default_stream()),
                      Contains("was not returned by cuda::alloc"));
}
