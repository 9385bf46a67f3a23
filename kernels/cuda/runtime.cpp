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
//
// Graph capture (begin_capture .. end_capture, one capture at a time): begin_capture waits for
// the device, so every cached block is idle. While capturing, a request on a capturing stream
// is served, in this order, by a block freed earlier in the same capture on the same stream
// (stream order holds in the graph too), by an idle cached block, or by a block freed earlier
// in the capture on another stream (the requesting stream then waits on the event recorded at
// that free, which becomes a graph edge); never by cudaMalloc (it may synchronise), and no
// event is queried. When none fits, the request throws the warm-up error. A block freed on a
// capturing stream is parked with the capture instead of going back to the cache; so is a
// block allocated during a capture and freed later, while its graph exists. destroy_graph
// gives the parked blocks back, ordered after the graph's last launch (an internal stream
// waits on it and records each block's event).
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
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

// Sets the current device for a scope.
class DeviceScope {
 public:
  explicit DeviceScope(int device) : prev_(detail::current_device()) {
    if (device != prev_) CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceScope() { cudaSetDevice(prev_); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int prev_;
};

cudaStreamCaptureStatus capture_status(cudaStream_t cs) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(cs, &st));
  return st;
}

struct Block {
  void* ptr = nullptr;
  size_t size = 0;       // class size (what cudaMalloc returned)
  size_t requested = 0;  // what the caller asked for
  int device = 0;
  cudaStream_t stream = nullptr;  // last stream that used it; nullptr: none may reuse at once
  cudaEvent_t event = nullptr;    // recorded on `stream` when freed
  uint64_t owner = 0;             // the capture that allocated it (0: none)
  bool idle = false;              // cached with no work pending (set by begin_capture)
  bool captured = false;          // `event` was recorded inside a capture: never query it
};

// A capture in progress, or the instantiated graph it became, with the memory it keeps.
struct Capture {
  uint64_t id = 0;
  int device = 0;
  cudaStream_t origin = nullptr;  // begin_capture's stream
  std::thread::id thread;
  std::vector<Block> parked;  // freed while it may still use them
  std::string refused;        // the first request refused while capturing
  cudaGraphExec_t exec = nullptr;
  cudaEvent_t done = nullptr;  // recorded after every launch
  bool launched = false;
};

struct Allocator {
  std::mutex mu;
  std::unordered_map<void*, Block> live;
  // device -> size class -> free blocks
  std::vector<std::unordered_map<size_t, std::vector<Block>>> cached;
  std::vector<cudaEvent_t> spare_events;
  size_t allocated = 0, peak = 0, reserved = 0;
  // graph capture
  Capture* capture = nullptr;  // the capture in progress
  std::unordered_map<uint64_t, std::unique_ptr<Capture>> captures;  // by id, until released
  std::unordered_map<cudaGraphExec_t, Capture*> graphs;
  std::vector<Capture*> doomed;  // destroyed while a capture was in progress
  std::vector<cudaStream_t> release_streams;  // by device
  uint64_t next_capture = 1;

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
    if (out->event) spare_events.push_back(out->event);
    out->event = nullptr;
    out->owner = 0;
    out->idle = false;
    out->captured = false;
    return true;
  }

  // A block of class `size` for stream cs while a capture is in progress, without cudaMalloc
  // or event queries, or false. on_capture: cs is capturing (else: the capturing thread with
  // another stream, which may use only cached blocks).
  bool reuse_in_capture(int device, size_t size, cudaStream_t cs, bool on_capture, Block* out) {
    std::vector<Block>& pk = capture->parked;
    auto parked_fits = [&](const Block& b) {
      return b.size == size && b.device == device && b.captured && b.event;
    };
    if (on_capture) {
      for (size_t i = pk.size(); i-- > 0;)
        if (parked_fits(pk[i]) && pk[i].stream == cs) return take(pk, i, out);
    }
    auto& b = bins(device);
    auto it = b.find(size);
    if (it != b.end()) {
      auto& list = it->second;
      for (size_t i = list.size(); i-- > 0;)
        if (list[i].idle || (!on_capture && list[i].stream == cs)) return take(list, i, out);
    }
    if (on_capture) {
      for (size_t i = pk.size(); i-- > 0;) {
        if (!parked_fits(pk[i])) continue;
        CUDA_CHECK(cudaStreamWaitEvent(cs, pk[i].event, 0));
        return take(pk, i, out);
      }
    }
    return false;
  }

  cudaStream_t release_stream(int device) {
    if (device >= int(release_streams.size())) release_streams.resize(device + 1, nullptr);
    if (!release_streams[device]) {
      DeviceScope scope(device);
      CUDA_CHECK(cudaStreamCreateWithFlags(&release_streams[device], cudaStreamNonBlocking));
    }
    return release_streams[device];
  }

  // Gives c's parked blocks back to the cache, ordered after their last use (the events
  // recorded when they were freed outside a capture, and c's last launch), destroys c's
  // graph and forgets c. The caller holds mu; no capture is in progress.
  void release(Capture* c) {
    DeviceScope scope(c->device);
    const cudaStream_t rs = release_stream(c->device);
    for (const Block& b : c->parked)
      if (b.event && !b.captured) CUDA_CHECK(cudaStreamWaitEvent(rs, b.event, 0));
    if (c->launched) CUDA_CHECK(cudaStreamWaitEvent(rs, c->done, 0));
    for (Block& b : c->parked) {
      if (b.event) spare_events.push_back(b.event);
      b.event = nullptr;
    }
    for (Block& b : c->parked) {
      b.event = take_event();
      CUDA_CHECK(cudaEventRecord(b.event, rs));
      b.stream = nullptr;
      b.owner = 0;
      b.idle = false;
      b.captured = false;
      bins(b.device)[b.size].push_back(b);
    }
    c->parked.clear();
    if (c->exec) CUDA_CHECK(cudaGraphExecDestroy(c->exec));
    if (c->done) CUDA_CHECK(cudaEventDestroy(c->done));
    captures.erase(c->id);
  }

  // Frees every cached block of every device; the caller holds mu; no capture is in progress.
  void release_cached() {
    int prev = detail::current_device();
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
// Records `what` as the reason the capture in progress (if any) failed, and throws it.
[[noreturn]] void refuse_in_capture(const std::string& what) {
  {
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mu);
    if (a.capture && a.capture->refused.empty()) a.capture->refused = what;
  }
  throw Error(what);
}

int sm_count() {
  static std::mutex mu;
  static std::vector<int>* counts = new std::vector<int>;
  const int d = detail::current_device();
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
  const int device = detail::current_device();
  Block b;
  bool found = false;
  if (a.capture) {
    const bool on_capture = capture_status(cs) != cudaStreamCaptureStatusNone;
    if (on_capture || std::this_thread::get_id() == a.capture->thread) {
      if (!a.reuse_in_capture(device, size, cs, on_capture, &b)) {
        const std::string msg = str_cat("cuda::alloc: a new allocation of ", bytes,
                                        " bytes during graph capture; run the step once before "
                                        "capturing");
        if (a.capture->refused.empty()) a.capture->refused = msg;
        throw Error(msg);
      }
      if (on_capture) b.owner = a.capture->id;
      found = true;
    }
  }
  if (!found && !a.reuse(device, size, cs, &b)) {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation && !a.capture) {
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
  b.idle = false;
  // Kept for a graph: freed on a capturing stream, or allocated by a capture whose graph exists.
  Capture* keep = nullptr;
  const bool in_capture = a.capture && capture_status(cs) != cudaStreamCaptureStatusNone;
  if (in_capture) {
    keep = a.capture;
  } else if (b.owner) {
    auto c = a.captures.find(b.owner);
    if (c != a.captures.end()) keep = c->second.get();
  }
  b.event = a.take_event();
  if (in_capture) {
    // Recorded into the capture: a later request on another capturing stream waits on it.
    // An invalidated capture refuses it; end_capture reports that capture's failure.
    if (cudaEventRecord(b.event, cs) != cudaSuccess) cudaGetLastError();
    b.captured = true;
  } else {
    CUDA_CHECK(cudaEventRecord(b.event, cs));
    b.captured = false;
  }
  if (keep) {
    keep->parked.push_back(b);
  } else {
    b.owner = 0;
    a.bins(b.device)[b.size].push_back(b);
  }
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

void reset_peak_allocated_bytes() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  a.peak = a.allocated;
}

size_t reserved_bytes() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  return a.reserved;
}

void empty_cache() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  HR_CHECK(!a.capture, "cuda::empty_cache: not while a graph capture is in progress");
  a.release_cached();
}

Stream default_stream() {
  const int d = detail::current_device();
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

namespace {
// A synchronising call on a capturing stream would invalidate the capture: refuse it first.
void refuse_if_capturing(cudaStream_t cs, const char* what) {
  if (capture_status(cs) != cudaStreamCaptureStatusNone)
    detail::refuse_in_capture(str_cat(what, ": a synchronous call on a stream that is being "
                                      "captured into a CUDA graph (use asynchronous calls and "
                                      "the *_dev kernels while capturing)"));
}
}  // namespace

void synchronize(Stream s) {
  const cudaStream_t cs = detail::stream_of(s);
  refuse_if_capturing(cs, "cuda::synchronize");
  CUDA_CHECK(cudaStreamSynchronize(cs));
}

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
  refuse_if_capturing(cs, "cuda::memcpy_h2d");
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cs));
  CUDA_CHECK(cudaStreamSynchronize(cs));
}

void memcpy_d2h(void* dst, const void* src, size_t bytes, Stream s) {
  if (bytes == 0) return;
  const cudaStream_t cs = detail::stream_of(s);
  refuse_if_capturing(cs, "cuda::memcpy_d2h");
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cs));
  CUDA_CHECK(cudaStreamSynchronize(cs));
}

void memcpy_d2d(void* dst, const void* src, size_t bytes, Stream s) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, detail::stream_of(s)));
}

void* alloc_pinned(size_t bytes) {
  void* p = nullptr;
  CUDA_CHECK(cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault));
  return p;
}

void free_pinned(void* p) {
  if (p) CUDA_CHECK(cudaFreeHost(p));
}

void memcpy_h2d_async(void* dst, const void* pinned_src, size_t bytes, Stream s) {
  if (bytes == 0) return;
  CUDA_CHECK(
      cudaMemcpyAsync(dst, pinned_src, bytes, cudaMemcpyHostToDevice, detail::stream_of(s)));
}

void event_synchronize(Event e) {
  CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(e)));
}

void memset_zero(void* dst, size_t bytes, Stream s) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, detail::stream_of(s)));
}

// ---- CUDA graphs ----

bool is_capturing(Stream s) {
  return capture_status(detail::stream_of(s)) != cudaStreamCaptureStatusNone;
}

void begin_capture(Stream s) {
  const cudaStream_t cs = detail::stream_of(s);
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  HR_CHECK(!a.capture, "begin_capture: a capture is already in progress (begun on stream ",
           a.capture ? static_cast<void*>(a.capture->origin) : nullptr,
           "); captures run one at a time");
  HR_CHECK(capture_status(cs) == cudaStreamCaptureStatusNone, "begin_capture: stream ", s,
           " is already capturing");
  const int device = detail::current_device();
  // Once the device is idle, every cached block may serve any stream of the capture.
  CUDA_CHECK(cudaDeviceSynchronize());
  for (auto& kv : a.bins(device))
    for (Block& b : kv.second) b.idle = true;
  a.release_stream(device);  // created now, not while capturing
  auto c = std::make_unique<Capture>();
  c->id = a.next_capture++;
  c->device = device;
  c->origin = cs;
  c->thread = std::this_thread::get_id();
  CUDA_CHECK(cudaStreamBeginCapture(cs, cudaStreamCaptureModeThreadLocal));
  a.capture = c.get();
  a.captures.emplace(c->id, std::move(c));
}

GraphExec end_capture(Stream s) {
  const cudaStream_t cs = detail::stream_of(s);
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  Capture* c = a.capture;
  HR_CHECK(c, "end_capture: no capture is in progress (begin_capture starts one)");
  HR_CHECK(c->origin == cs, "end_capture: stream ", s, " is not the stream the capture began on (",
           static_cast<void*>(c->origin), ")");
  HR_CHECK(c->thread == std::this_thread::get_id(),
           "end_capture: called from another thread than begin_capture");
  // The reason the capture failed, formatted as the CHECK macros do; empty when it succeeded.
  auto call_failed = [](int line, const char* call, cudaError_t e) {
    cudaGetLastError();
    return str_cat(detail::short_path(__FILE__), ":", line, ": ", call, " failed: ",
                   cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  };
  std::string failure;
  cudaGraph_t graph = nullptr;
  const int end_line = __LINE__ + 1;
  const cudaError_t end_err = cudaStreamEndCapture(cs, &graph);
  a.capture = nullptr;  // the stream has left capture mode, whatever the outcome
  if (end_err != cudaSuccess)
    failure = call_failed(end_line, "cudaStreamEndCapture(cs, &graph)", end_err);
  else if (!graph)
    failure = "the capture was invalidated by an operation not permitted while capturing";
  if (!c->refused.empty()) failure = failure.empty() ? c->refused : c->refused + "; " + failure;
  cudaGraphExec_t exec = nullptr;
  if (failure.empty()) {
    const int line = __LINE__ + 1;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    if (e != cudaSuccess) {
      failure = call_failed(line, "cudaGraphInstantiate(&exec, graph, 0)", e);
      exec = nullptr;
    }
  }
  if (graph && cudaGraphDestroy(graph) != cudaSuccess) cudaGetLastError();
  // Graphs destroyed while capturing give their memory back now.
  std::vector<Capture*> doomed;
  doomed.swap(a.doomed);
  for (Capture* d : doomed) a.release(d);
  if (!failure.empty()) {
    a.release(c);
    throw Error(str_cat("end_capture: the capture on stream ", s, " failed: ", failure,
                        ". Nothing was captured; the stream is usable again"));
  }
  c->exec = exec;
  CUDA_CHECK(cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming));
  a.graphs.emplace(exec, c);
  return exec;
}

void launch_graph(GraphExec g, Stream s) {
  const cudaStream_t cs = detail::stream_of(s);
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.graphs.find(static_cast<cudaGraphExec_t>(g));
  HR_CHECK(it != a.graphs.end(), "launch_graph: ", g,
           " is not a graph returned by end_capture (or it was destroyed)");
  HR_CHECK(capture_status(cs) == cudaStreamCaptureStatusNone, "launch_graph: stream ", s,
           " is capturing; launch graphs outside captures");
  CUDA_CHECK(cudaGraphLaunch(it->second->exec, cs));
  CUDA_CHECK(cudaEventRecord(it->second->done, cs));
  it->second->launched = true;
}

void destroy_graph(GraphExec g) {
  if (!g) return;
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.graphs.find(static_cast<cudaGraphExec_t>(g));
  HR_CHECK(it != a.graphs.end(), "destroy_graph: ", g,
           " is not a graph returned by end_capture (or it was destroyed)");
  Capture* c = it->second;
  a.graphs.erase(it);
  if (a.capture) {
    a.doomed.push_back(c);  // no stream work while capturing: released by end_capture
    return;
  }
  a.release(c);
}

}  // namespace hr::cuda
