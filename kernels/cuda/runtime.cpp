// CUDA runtime of the engine: device queries, the engine's default streams, events, copies,
// and the stream-ordered caching allocator.
//
// Allocator: a request is rounded up to a size class (512 B minimum, then 8 classes per power
// of two, so at most 12.5% is wasted) and served from that class's free list, else by
// cudaMalloc. A block freed on stream s goes back to its list tagged with s and with an event
// recorded on s: work on s may reuse it at once (stream order protects it), another stream
// only once that event has completed. When cudaMalloc fails, the cached blocks are released
// (after a device synchronize) and the allocation is retried once.
// The state is created on first use and deliberately never destroyed, so nothing is freed
// after the CUDA runtime has shut down at exit.
#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/check.h"

namespace hr::cuda {
namespace {

constexpr size_t kMinBlock = 512;

size_t size_class(size_t n) {
  if (n <= kMinBlock) return kMinBlock;
  int p = 63 - __builtin_clzll(n);  // 2^p <= n
  const size_t step = std::max<size_t>(kMinBlock, size_t(1) << std::max(p - 3, 0));
  return (n + step - 1) / step * step;
}

int current_device() {
  int d = 0;
  CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

struct Block {
  void* ptr = nullptr;
  size_t size = 0;       // class size (what cudaMalloc returned)
  size_t requested = 0;  // what the caller asked for
  int device = 0;
  cudaStream_t stream = nullptr;  // last stream that used it; nullptr: none may reuse at once
  cudaEvent_t event = nullptr;    // recorded on `stream` when freed
};

struct Allocator {
  std::mutex mu;
  std::unordered_map<void*, Block> live;
  // device -> size class -> free blocks
  std::vector<std::unordered_map<size_t, std::vector<Block>>> cached;
  std::vector<cudaEvent_t> spare_events;
  size_t allocated = 0, peak = 0, reserved = 0;

  cudaEvent_t take_event() {
    if (!spare_events.empty()) {
      cudaEvent_t e = spare_events.back();
      spare_events.pop_back();
      return e;
    }
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }

  std::unordered_map<size_t, std::vector<Block>>& bins(int device) {
    if (device >= int(cached.size())) cached.resize(device + 1);
    return cached[device];
  }

  // A cached block of class `size` usable by stream s now, or false.
  bool reuse(int device, size_t size, cudaStream_t s, Block* out) {
    auto& b = bins(device);
    auto it = b.find(size);
    if (it == b.end() || it->second.empty()) return false;
    auto& list = it->second;
    for (size_t i = list.size(); i-- > 0;) {
      if (list[i].stream == s) return take(list, i, out);
    }
    for (size_t i = list.size(); i-- > 0;) {
      const cudaError_t q = cudaEventQuery(list[i].event);
      if (q == cudaSuccess) return take(list, i, out);
      if (q != cudaErrorNotReady) CUDA_CHECK(q);
    }
    return false;
  }

  bool take(std::vector<Block>& list, size_t i, Block* out) {
    *out = list[i];
    list[i] = list.back();
    list.pop_back();
    spare_events.push_back(out->event);
    out->event = nullptr;
    return true;
  }

  // Frees every cached block of every device; the caller holds mu.
  void release_cached() {
    int prev = current_device();
    for (int d = 0; d < int(cached.size()); ++d) {
      bool any = false;
      for (auto& kv : cached[d]) any = any || !kv.second.empty();
      if (!any) continue;
      CUDA_CHECK(cudaSetDevice(d));
      CUDA_CHECK(cudaDeviceSynchronize());
      for (auto& kv : cached[d]) {
        for (Block& b : kv.second) {
          CUDA_CHECK(cudaFree(b.ptr));
          reserved -= b.size;
          spare_events.push_back(b.event);
        }
        kv.second.clear();
      }
    }
    CUDA_CHECK(cudaSetDevice(prev));
  }
};

Allocator& allocator() {
  static Allocator* a = new Allocator;
  return *a;
}

std::mutex g_stream_mu;
std::vector<cudaStream_t>& default_streams() {
  static auto* v = new std::vector<cudaStream_t>;
  return *v;
}

}  // namespace

namespace detail {
int sm_count() {
  static std::mutex mu;
  static std::vector<int>* counts = new std::vector<int>;
  const int d = current_device();
  std::lock_guard<std::mutex> lock(mu);
  if (d >= int(counts->size())) counts->resize(d + 1, 0);
  int& c = (*counts)[d];
  if (c == 0) CUDA_CHECK(cudaDeviceGetAttribute(&c, cudaDevAttrMultiProcessorCount, d));
  return c;
}
}  // namespace detail

bool available() {
  try {
    static const bool ok = [] {
      int n = 0;
      if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return false;
      }
      return n > 0;
    }();
    return ok;
  } catch (...) {
    return false;
  }
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

void* alloc(size_t bytes, Stream s) {
  if (bytes == 0) return nullptr;
  const cudaStream_t cs = detail::stream_of(s);
  const size_t size = size_class(bytes);
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  const int device = current_device();
  Block b;
  if (!a.reuse(device, size, cs, &b)) {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      a.release_cached();
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      cudaGetLastError();
      throw Error(str_cat("cuda::alloc: cannot allocate ", bytes, " bytes on device ", device,
                          " (", cudaGetErrorString(e), "; engine holds ", a.reserved,
                          " bytes, ", a.allocated, " in use; device free ", free_b, " of ",
                          total_b, ")"));
    }
    a.reserved += size;
    b.ptr = p;
    b.size = size;
    b.device = device;
  }
  b.requested = bytes;
  b.stream = cs;
  a.allocated += bytes;
  a.peak = std::max(a.peak, a.allocated);
  a.live.emplace(b.ptr, b);
  return b.ptr;
}

void free(void* p, Stream s) {
  if (!p) return;
  const cudaStream_t cs = detail::stream_of(s);
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.live.find(p);
  HR_CHECK(it != a.live.end(), "cuda::free: ", p, " was not returned by cuda::alloc (or was freed twice)");
  Block b = it->second;
  a.live.erase(it);
  a.allocated -= b.requested;
  b.stream = cs;
  b.event = a.take_event();
  CUDA_CHECK(cudaEventRecord(b.event, cs));
  a.bins(b.device)[b.size].push_back(b);
}

size_t allocated_bytes() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  return a.allocated;
}

size_t peak_allocated_bytes() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  return a.peak;
}

size_t reserved_bytes() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  return a.reserved;
}

void empty_cache() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  a.release_cached();
}

Stream default_stream() {
  const int d = current_device();
  std::lock_guard<std::mutex> lock(g_stream_mu);
  auto& v = default_streams();
  if (d >= int(v.size())) v.resize(d + 1, nullptr);
  if (!v[d]) CUDA_CHECK(cudaStreamCreateWithFlags(&v[d], cudaStreamNonBlocking));
  return v[d];
}

Stream create_stream() {
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

void destroy_stream(Stream s) {
  if (!s) return;
  const cudaStream_t cs = static_cast<cudaStream_t>(s);
  {
    // A later stream may be created at the same address: blocks last used on s may then be
    // reused only through their events.
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mu);
    for (auto& dev : a.cached)
      for (auto& kv : dev)
        for (Block& b : kv.second)
          if (b.stream == cs) b.stream = nullptr;
  }
  CUDA_CHECK(cudaStreamDestroy(cs));
}

void synchronize(Stream s) { CUDA_CHECK(cudaStreamSynchronize(detail::stream_of(s))); }

Event create_event() {
  cudaEvent_t e;
  CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

void destroy_event(Event e) {
  if (e) CUDA_CHECK(cudaEventDestroy(static_cast<cudaEvent_t>(e)));
}

void record_event(Event e, Stream s) {
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(e), detail::stream_of(s)));
}

void wait_event(Stream s, Event e) {
  CUDA_CHECK(cudaStreamWaitEvent(detail::stream_of(s), static_cast<cudaEvent_t>(e), 0));
}

void memcpy_h2d(void* dst, const void* src, size_t bytes, Stream s) {
  if (bytes == 0) return;
  const cudaStream_t cs = detail::stream_of(s);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cs));
  CUDA_CHECK(cudaStreamSynchronize(cs));
}

void memcpy_d2h(void* dst, const void* src, size_t bytes, Stream s) {
  if (bytes == 0) return;
  const cudaStream_t cs = detail::stream_of(s);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cs));
  CUDA_CHECK(cudaStreamSynchronize(cs));
}

void memcpy_d2d(void* dst, const void* src, size_t bytes, Stream s) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, detail::stream_of(s)));
}

void memset_zero(void* dst, size_t bytes, Stream s) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, detail::stream_of(s)));
}

}  // namespace hr::cuda
