// Static graphs: the compile pipeline (passes.h, in order) and the executor, one loop over the
// nodes that calls each op's own kernel (engine/op.h run_kernel) on its stream.
#include "engine/graph/executable.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iomanip>
#include <random>
#include <sstream>
#include <thread>

#include "engine/graph/passes.h"
#include "engine/ops.h"
#include "engine/stream.h"

namespace hr::graph {

struct Executable::Impl {
  std::shared_ptr<GraphIR> ir;
  CompileOptions opt;
  Device dev;
  PlanStats stats;
  Gradients grads;
  std::vector<char> prologue;  // per node (inference)
  bool prologue_done = false;
  Schedule sched;
  MemoryPlan plan;
  std::shared_ptr<Storage> arena;
  // per node: the tensors its kernel reads and writes (views of the arena, parameters, constants)
  struct Launch {
    std::vector<Tensor> in, out;
  };
  std::vector<Launch> launches;
  std::vector<Tensor> views;  // per value
  // CUDA
  std::vector<cuda::Stream> streams;  // [0] = the engine's default stream
  std::vector<cuda::Event> events;    // by node (nullptr where none)
  cuda::GraphExec exec = nullptr;
  std::function<void()> before_replay;
  // CUDA inputs from host memory: pinned staging buffers, two per input, used in turn
  struct Staging {
    void* host[2] = {nullptr, nullptr};
    cuda::Event uploaded[2] = {nullptr, nullptr};  // recorded after each buffer's upload
    bool pending[2] = {false, false};
    size_t bytes = 0;
    int next = 0;
  };
  std::map<V, Staging> staging;
  // CPU branch concurrency (CompileOptions::cpu_branches): program order cut into segments,
  // each run either node by node with every thread inside each op, or with its streams split
  // over the threads (each op on one thread, cross-stream edges waited for through done[])
  struct Segment {
    int begin, end;
    bool concurrent;
  };
  std::vector<Segment> segments;
  std::vector<int> stream_thread;  // stream -> thread in a concurrent segment
  int branch_threads = 0;          // 0: program order, every op on every thread
  std::unique_ptr<std::atomic<int64_t>[]> done;  // per node: the last run that completed it
  int64_t run_id = 0;
  std::vector<double> stream_seconds;  // per stream: its nodes' time in concurrent segments
  void plan_cpu_branches();
  void balance_streams();
  void launch_segments();
  // node i runs in the prologue (once, before any run), not in a run
  bool in_prologue(size_t i) const { return !prologue.empty() && prologue[i]; }
  // gradient-ready callbacks (CPU): per node, the parameters whose gradient it completes
  std::vector<std::vector<size_t>> grads_done_at;
  std::function<void(const Tensor&, const Tensor&)> grad_ready;
  // profiling
  bool profiling = false, profile_by_shape = false;
  std::map<std::string, double> prof_seconds;
  std::map<std::string, int64_t> prof_calls;
  int64_t prof_runs = 0;

  GraphIR& g() { return *ir; }
  const GraphIR& g() const { return *ir; }
  Tensor view(V v) const;
  void exec_node(size_t i);
  void run_prologue();
  void launch_all();
  void on_run();
  void upload_input(V v, const Tensor& t);
  void free_staging();
};

Tensor Executable::Impl::view(V v) const {
  if (v < 0) return Tensor();
  const Value& x = g().values[v];
  if (x.kind == ValueKind::Param || x.kind == ValueKind::Constant) return x.tensor;
  HR_CHECK(arena, "graph: compiled with allocate = false (plan only): no buffers");
  HR_CHECK(plan.offset[v] >= 0, "graph: value %", v, " has no buffer");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = arena;
  impl->offset = plan.offset[v] / static_cast<int64_t>(dtype_size(x.dtype));
  impl->shape = x.shape;
  impl->dtype = x.dtype;
  impl->strides = make_strides(x.shape, device_format(x.shape, dev));
  return Tensor(impl);
}

void Executable::Impl::exec_node(size_t i) {
  const Node& n = g().nodes[i];
  const Launch& l = launches[i];
  const cuda::Stream st = dev.is_cuda() ? streams[n.stream] : nullptr;
  StreamGuard guard(st);
  if (!profiling || dev.is_cuda()) {
    run_kernel(*n.op, KernelArgs{l.in, l.out, st}, dev);
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  run_kernel(*n.op, KernelArgs{l.in, l.out, st}, dev);
  std::string key = n.op->name();
  if (profile_by_shape) {
    key += " " + shape_str(l.in.empty() || !l.in[0].defined() ? Shape{} : l.in[0].shape());
    if (n.in.size() > 1 && l.in[1].defined()) key += " " + shape_str(l.in[1].shape());
    const std::string at = n.op->attributes();
    if (!at.empty()) key += " " + at;
  }
  prof_seconds[key] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++prof_calls[key];
}

// The parameter-only nodes, in order on the main stream (before any run's start).
void Executable::Impl::run_prologue() {
  if (prologue_done || prologue.empty()) return;
  const cuda::Stream st = dev.is_cuda() ? streams[0] : nullptr;
  StreamGuard guard(st);
  for (size_t i = 0; i < prologue.size(); ++i)
    if (prologue[i]) run_kernel(*g().nodes[i].op, KernelArgs{launches[i].in, launches[i].out, st}, dev);
  prologue_done = true;
}

// t (host memory) into value v's buffer: t's bytes into a pinned staging buffer, an
// asynchronous copy to a device tensor on the main stream (from pinned memory cudaMemcpyAsync
// does not wait for the host or the stream; from pageable memory it may synchronise), then the
// conversions copy_ does on the device (dtype, layout), also on the main stream. The host waits
// only until the buffer's previous upload, two calls ago, has read it.
void Executable::Impl::upload_input(V v, const Tensor& t) {
  const MemoryFormat f = t.suggest_format();
  const Tensor src = t.contiguous(f);  // on the host
  const size_t n = src.nbytes();
  Staging& s = staging[v];
  if (s.bytes < n) {  // first use (or a wider dtype): the buffers, once
    for (int k = 0; k < 2; ++k) {
      if (!s.uploaded[k]) s.uploaded[k] = cuda::create_event();
      if (s.pending[k]) cuda::event_synchronize(s.uploaded[k]);
      s.pending[k] = false;
      cuda::free_pinned(s.host[k]);
      s.host[k] = nullptr;
    }
    s.bytes = 0;
    for (int k = 0; k < 2; ++k) s.host[k] = cuda::alloc_pinned(n);
    s.bytes = n;
  }
  const int k = s.next;
  s.next = 1 - k;
  if (s.pending[k]) {
    cuda::event_synchronize(s.uploaded[k]);
    s.pending[k] = false;
  }
  std::memcpy(s.host[k], src.raw_data(), n);
  const cuda::Stream st = streams[0];
  StreamGuard guard(st);
  Tensor dev_src = Tensor::empty(src.shape(), src.dtype(), dev, f);
  cuda::memcpy_h2d_async(dev_src.raw_data(), s.host[k], n, st);
  cuda::record_event(s.uploaded[k], st);
  s.pending[k] = true;
  views[v].copy_(dev_src);  // device to device: asynchronous
}

void Executable::Impl::free_staging() {
  for (auto& [v, s] : staging)
    for (int k = 0; k < 2; ++k) {
      if (s.pending[k]) cuda::event_synchronize(s.uploaded[k]);
      if (s.host[k]) cuda::free_pinned(s.host[k]);
      if (s.uploaded[k]) cuda::destroy_event(s.uploaded[k]);
    }
  staging.clear();
}

void Executable::Impl::on_run() {
  for (const Node& n : g().nodes) n.op->on_run();
}

// Every node of a run in program order; on CUDA each on its stream, with the planned waits and
// records.
void Executable::Impl::launch_all() {
  if (branch_threads > 1 && !profiling && !grad_ready) {
    launch_segments();
    return;
  }
  const auto& nodes = g().nodes;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (in_prologue(i)) continue;
    if (dev.is_cuda()) {
      const cuda::Stream st = streams[nodes[i].stream];
      for (int p : sched.waits[i]) cuda::wait_event(st, events[p]);
      exec_node(i);
      if (sched.records[i]) cuda::record_event(events[i], st);
    } else {
      exec_node(i);
      if (grad_ready && !grads_done_at.empty())
        for (size_t k : grads_done_at[i]) {
          const Tensor& p = grads.params[k];
          grad_ready(p, views[grads.of_param.at(p.impl())]);
        }
    }
  }
}

// A node is "solo" when it is ordered (happens-before, either way) with every node of the other
// streams: the stem, the transitions' joins; no other node can run beside it, so it runs with
// every thread. Runs of the other nodes (a stage's branches) form concurrent segments: thread t
// takes the streams mapped to it and runs their nodes in program order, each op on one thread
// (inside an OpenMP team the kernels take one thread), waiting for a producer on another stream
// through done[]. Program order is a topological order, so no thread waits for one that waits
// for it; segments end with the team's barrier. The same happens-before the memory plan was
// made under (events on CUDA), so the buffers' reuse stays safe.
void Executable::Impl::plan_cpu_branches() {
  const int S = sched.streams, T = omp_get_max_threads();
  if (dev.is_cuda() || S < 2 || T < 2 || T > S) return;  // more threads than streams: split ops
  const auto& nodes = g().nodes;
  const int N = static_cast<int>(nodes.size());
  auto skipped = [&](int i) { return in_prologue(static_cast<size_t>(i)); };
  std::vector<std::vector<int>> at(S);  // the nodes of each stream, in order
  for (int i = 0; i < N; ++i)
    if (!skipped(i)) at[nodes[i].stream].push_back(i);
  std::vector<char> solo(N, 1);
  for (int i = 0; i < N; ++i) {
    if (skipped(i)) continue;
    for (int t = 0; t < S && solo[i]; ++t) {
      if (t == nodes[i].stream) continue;
      const int k = sched.vc_in[i][t];  // t's nodes before i; the next one must come after i
      if (k < static_cast<int>(at[t].size()) && !sched.before(g(), i, at[t][k])) solo[i] = 0;
    }
  }
  // segments: maximal runs of solo / other nodes (prologue nodes, not run, join either)
  int concurrent = 0;
  for (int i = 0; i < N; ++i) {
    if (skipped(i)) {
      if (!segments.empty()) segments.back().end = i + 1;
      continue;
    }
    if (segments.empty() || segments.back().concurrent != !solo[i])
      segments.push_back({segments.empty() ? 0 : segments.back().end, i + 1, !solo[i]});
    else
      segments.back().end = i + 1;
  }
  if (!segments.empty()) segments.back().end = N;
  for (const Segment& sg : segments) concurrent += sg.concurrent;
  if (!concurrent) {
    segments.clear();
    return;
  }
  // first run: streams s and S-1-s together (HRNet: the highest and the lowest resolution, then
  // the middle two), the pairs dealt over the threads; from then on the streams are dealt by
  // the time their nodes took in that run (balance_streams)
  stream_thread.resize(S);
  stream_seconds.assign(S, 0.0);
  for (int st = 0; st < S; ++st) stream_thread[st] = std::min(st, S - 1 - st) % T;
  branch_threads = T;
  stats.branch_segments = concurrent;
  done.reset(new std::atomic<int64_t>[static_cast<size_t>(N)]);
  for (int i = 0; i < N; ++i) done[i].store(-1, std::memory_order_relaxed);
}

void Executable::Impl::launch_segments() {
  const auto& nodes = g().nodes;
  const int64_t run = ++run_id;
  auto skipped = [&](int i) { return in_prologue(static_cast<size_t>(i)); };
  for (const Segment& seg : segments) {
    if (!seg.concurrent) {
      for (int i = seg.begin; i < seg.end; ++i) {
        if (skipped(i)) continue;
        exec_node(static_cast<size_t>(i));
        done[i].store(run, std::memory_order_release);
      }
      continue;
    }
    std::atomic<bool> failed{false};
    std::exception_ptr error;
#pragma omp parallel num_threads(branch_threads)
    {
      const int t = omp_get_thread_num();
      try {
        for (int i = seg.begin; i < seg.end && !failed.load(std::memory_order_relaxed); ++i) {
          if (skipped(i) || stream_thread[nodes[i].stream] != t) continue;
          for (int p : sched.waits[i])
            while (done[p].load(std::memory_order_acquire) != run) {
              if (failed.load(std::memory_order_relaxed)) break;
              std::this_thread::yield();
            }
          if (failed.load(std::memory_order_relaxed)) break;
          const auto t0 = std::chrono::steady_clock::now();
          exec_node(static_cast<size_t>(i));
          done[i].store(run, std::memory_order_release);
          if (run == 1)  // one thread per stream: no race
            stream_seconds[nodes[i].stream] +=
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        }
      } catch (...) {
#pragma omp critical(hr_graph_branch_error)
        if (!error) error = std::current_exception();
        failed.store(true);
      }
    }
    if (error) std::rethrow_exception(error);
  }
  if (run == 1) balance_streams();
}

// Longest first, each stream to the thread with the least time so far (the stream assignment
// changes no result: an op's bits depend on its thread count, one here).
void Executable::Impl::balance_streams() {
  const int S = static_cast<int>(stream_seconds.size());
  std::vector<int> order(S);
  for (int st = 0; st < S; ++st) order[st] = st;
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return stream_seconds[a] > stream_seconds[b]; });
  std::vector<double> load(branch_threads, 0.0);
  for (int st : order) {
    const int t = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    stream_thread[st] = t;
    load[t] += stream_seconds[st];
  }
}

// ---------------------------------------------------------------------------------------------
Executable::Executable(Graph graph, const CompileOptions& opt) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.ir = graph.shared();
  m.opt = opt;
  GraphIR& g = m.g();
  HR_CHECK(!g.sealed, "graph compile: this graph was compiled already");
  m.dev = g.opt.device;
  HR_CHECK(m.dev.is_cpu() || cuda::available() || !opt.allocate, "graph compile: the graph is for ",
           m.dev.str(), " but no CUDA device is available");
  const V loss = opt.loss.defined() ? g.value_of(opt.loss) : -1;
  HR_CHECK(!(opt.inference && loss >= 0),
           "graph compile: an inference graph has no loss to differentiate");

  // Fusion first: a batch norm followed by a ReLU and/or a residual add becomes one pass. Folding
  // then takes the plain ones into their convolutions, and on the CPU the fused ones too (the
  // convolution applies the add/ReLU to its output tiles: no pass left); on CUDA those keep
  // their one fused pass (the CUDA convolution has no fused epilogue yet).
  if (opt.fuse) m.stats.fused = fuse_batch_norm_act(g, loss >= 0);
  if (opt.fuse) m.stats.upsample_adds = fuse_upsample_add(g);
  if (opt.inference) m.stats.folded = fold_batch_norm(g, m.dev.is_cpu());
  if (opt.inference && opt.prepack && m.dev.is_cpu()) m.stats.prepacked = prepack_conv_weights(g);
  std::vector<V> live;
  if (loss >= 0) {
    m.grads = differentiate(g, loss);
    if (opt.reduce_gradients) {
      int streams = 1;
      for (const Node& n : g.nodes) streams = std::max(streams, n.stream + 1);
      reduce_gradients(g, m.grads, streams);  // a stream of their own
    }
    for (const auto& [impl, v] : m.grads.of_param) live.push_back(v);
    m.stats.weight_copies = bind_weight_copies(g, opt.weight_copy);
  }
  add_end_node(g, live);
  g.sealed = true;
  if (opt.inference) m.prologue = find_prologue(g);
  m.sched = schedule(g, opt.streams, m.prologue);
  m.plan = plan_memory(g, m.sched, m.prologue);

  m.stats.nodes = static_cast<int64_t>(g.nodes.size());
  m.stats.streams = m.sched.streams;
  m.stats.events = m.sched.events;
  for (char p : m.prologue) m.stats.prologue_nodes += p;
  m.stats.arena_bytes = m.plan.arena_bytes;
  m.stats.peak_live_bytes = m.plan.peak_live_bytes;
  m.stats.total_bytes = m.plan.total_bytes;
  m.stats.constant_bytes = m.plan.persistent_bytes;
  if (!opt.allocate) return;

  m.arena = std::make_shared<Storage>(static_cast<size_t>(std::max<int64_t>(m.plan.arena_bytes, 256)),
                                      m.dev);
  m.views.resize(g.values.size());
  for (size_t v = 0; v < g.values.size(); ++v)
    if (m.plan.offset[v] >= 0 || g.values[v].kind == ValueKind::Param ||
        g.values[v].kind == ValueKind::Constant)
      m.views[v] = m.view(static_cast<V>(v));
  m.launches.resize(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    for (V v : g.nodes[i].in) m.launches[i].in.push_back(v >= 0 ? m.views[v] : Tensor());
    for (V v : g.nodes[i].out) m.launches[i].out.push_back(v >= 0 ? m.views[v] : Tensor());
  }
  bool branches = opt.cpu_branches;
  if (const char* e = std::getenv("HR_CPU_BRANCHES"); e && *e) branches = std::string(e) != "0";
  if (branches) m.plan_cpu_branches();
  if (m.dev.is_cuda()) {
    m.streams.push_back(cuda::default_stream());
    for (int s = 1; s < m.sched.streams; ++s) m.streams.push_back(cuda::create_stream());
    m.events.assign(g.nodes.size(), nullptr);
    for (size_t i = 0; i < g.nodes.size(); ++i)
      if (m.sched.records[i]) m.events[i] = cuda::create_event();
  }
}

Executable::~Executable() {
  Impl& m = *impl_;
  if (!m.dev.is_cuda() || !m.arena) return;
  try {
    for (cuda::Stream s : m.streams) cuda::synchronize(s);
    m.free_staging();
    if (m.exec) cuda::destroy_graph(m.exec);
    for (cuda::Event e : m.events)
      if (e) cuda::destroy_event(e);
    for (size_t s = 1; s < m.streams.size(); ++s) cuda::destroy_stream(m.streams[s]);
  } catch (...) {
  }
}

void Executable::set_input(const std::string& name, const Tensor& t) {
  Impl& m = *impl_;
  auto it = m.g().inputs.find(name);
  HR_CHECK(it != m.g().inputs.end(), "graph set_input: no input named '", name, "'");
  const Value& v = m.g().values[it->second];
  HR_CHECK(t.defined() && t.shape() == v.shape, "graph set_input '", name, "': expected ",
           dtype_name(v.dtype), shape_str(v.shape), ", got ", t.defined() ? t.str() : "undefined");
  HR_CHECK(m.arena, "graph run: compiled with allocate = false (plan only)");
  if (m.dev.is_cuda() && t.device().is_cpu() && t.numel() > 0) {
    m.upload_input(it->second, t);
    return;
  }
  StreamGuard guard(m.dev.is_cuda() ? m.streams[0] : nullptr);
  m.views[it->second].copy_(t);
}

void Executable::run() {
  Impl& m = *impl_;
  HR_CHECK(m.arena, "graph run: compiled with allocate = false (plan only)");
  m.run_prologue();
  m.on_run();
  if (m.exec) {
    if (m.before_replay) {
      StreamGuard guard(m.streams[0]);  // what it enqueues runs before the graph
      m.before_replay();
    }
    cuda::launch_graph(m.exec, m.streams[0]);
    return;
  }
  if (m.profiling && m.dev.is_cpu()) ++m.prof_runs;
  m.launch_all();
}

void Executable::refresh_constants() {
  impl_->prologue_done = false;
  if (impl_->arena) impl_->run_prologue();
}

void Executable::capture(std::function<void()> after, std::function<void()> before_replay) {
  Impl& m = *impl_;
  HR_CHECK(m.dev.is_cuda(), "graph capture: CUDA graphs need a CUDA device (the graph is for ",
           m.dev.str(), ")");
  if (m.exec) return;
  HR_CHECK(m.arena, "graph capture: compiled with allocate = false (plan only): no buffers");
  m.run_prologue();
  cuda::synchronize(m.streams[0]);
  cuda::begin_capture(m.streams[0]);
  try {
    m.launch_all();
    if (after) {
      StreamGuard guard(m.streams[0]);
      after();
    }
  } catch (...) {
    try {
      cuda::GraphExec partial = cuda::end_capture(m.streams[0]);
      if (partial) cuda::destroy_graph(partial);
    } catch (...) {
    }
    throw;
  }
  m.exec = cuda::end_capture(m.streams[0]);
  m.before_replay = std::move(before_replay);
}

bool Executable::captured() const { return impl_->exec != nullptr; }

void Executable::run_interleaved(uint64_t seed) {
  Impl& m = *impl_;
  HR_CHECK(m.arena, "graph run: compiled with allocate = false (plan only)");
  HR_CHECK(m.dev.is_cpu(), "graph run_interleaved: a CPU test hook");
  m.run_prologue();
  m.on_run();
  const auto& nodes = m.g().nodes;
  const int S = m.sched.streams;
  std::vector<std::vector<int>> queue(S);
  for (size_t i = 0; i < nodes.size(); ++i)
    if (m.prologue.empty() || !m.prologue[i]) queue[nodes[i].stream].push_back(static_cast<int>(i));
  std::vector<size_t> head(S, 0);
  std::vector<char> done(nodes.size(), 0);
  std::mt19937_64 rng(seed);
  size_t remaining = 0;
  for (const auto& q : queue) remaining += q.size();
  while (remaining > 0) {
    std::vector<int> ready;
    for (int s = 0; s < S; ++s) {
      if (head[s] >= queue[s].size()) continue;
      bool ok = true;
      for (int p : m.sched.waits[queue[s][head[s]]]) ok = ok && done[p];
      if (ok) ready.push_back(s);
    }
    HR_CHECK(!ready.empty(), "graph run_interleaved: deadlock (a bug in the schedule)");
    const int s = ready[rng() % ready.size()];
    const int i = queue[s][head[s]++];
    m.exec_node(static_cast<size_t>(i));
    done[i] = 1;
    --remaining;
  }
}

void Executable::verify_plan() const { graph::verify_plan(impl_->g(), impl_->sched, impl_->plan); }

Tensor Executable::output(const std::string& name) const {
  auto it = impl_->g().outputs.find(name);
  HR_CHECK(it != impl_->g().outputs.end(), "graph output: no output named '", name, "'");
  HR_CHECK(impl_->arena, "graph: compiled with allocate = false (plan only): no buffers");
  return impl_->views[it->second];
}

Tensor Executable::grad(const Tensor& param) const {
  auto it = impl_->grads.of_param.find(param.impl());
  if (it == impl_->grads.of_param.end()) return Tensor();
  HR_CHECK(impl_->arena, "graph: compiled with allocate = false (plan only): no buffers");
  return impl_->views[it->second];
}

std::vector<Tensor> Executable::trained_parameters() const { return impl_->grads.params; }

void Executable::set_gradient_ready(std::function<void(const Tensor&, const Tensor&)> ready) {
  Impl& m = *impl_;
  m.grad_ready = std::move(ready);
  if (!m.grad_ready || !m.grads_done_at.empty()) return;
  m.grads_done_at.assign(m.g().nodes.size(), {});
  for (size_t k = 0; k < m.grads.params.size(); ++k) {
    const int producer = m.g().values[m.grads.of_param.at(m.grads.params[k].impl())].producer;
    if (producer >= 0) m.grads_done_at[static_cast<size_t>(producer)].push_back(k);
  }
}

void Executable::set_profiling(bool on, bool by_shape) {
  impl_->profiling = on;
  impl_->profile_by_shape = by_shape;
}

std::string Executable::profile_report() const {
  const Impl& m = *impl_;
  std::vector<std::pair<double, std::string>> rows;
  double total = 0;
  for (const auto& [op, s] : m.prof_seconds) {
    rows.emplace_back(s, op);
    total += s;
  }
  std::sort(rows.rbegin(), rows.rend());
  std::ostringstream os;
  const double runs = static_cast<double>(std::max<int64_t>(1, m.prof_runs));
  const int w = m.profile_by_shape ? 72 : 28;
  os << std::left << std::setw(w) << "op" << std::right << std::setw(12) << "ms/run"
     << std::setw(8) << "share" << std::setw(10) << "calls/run" << "\n";
  for (const auto& [s, op] : rows)
    os << std::left << std::setw(w) << op << std::right << std::fixed << std::setprecision(2)
       << std::setw(12) << 1e3 * s / runs << std::setw(7) << std::setprecision(1)
       << 100 * s / std::max(total, 1e-12) << "%" << std::setw(10)
       << m.prof_calls.at(op) / std::max<int64_t>(1, m.prof_runs) << "\n";
  os << std::left << std::setw(w) << "total" << std::right << std::fixed << std::setprecision(2)
     << std::setw(12) << 1e3 * total / runs << "\n";
  return os.str();
}

const PlanStats& Executable::stats() const { return impl_->stats; }
const GraphIR& Executable::graph() const { return impl_->g(); }

// ---------------------------------------------------------------------------------------------
InferenceRunner::InferenceRunner(Forward forward, Device device, DType autocast)
    : forward_(std::move(forward)), device_(device), autocast_(autocast) {}

InferenceRunner::~InferenceRunner() = default;

std::vector<Tensor> InferenceRunner::operator()(const Tensor& x) {
  HR_CHECK(x.defined(), "inference: undefined input");
  auto& exe = graphs_[x.shape()];
  if (!exe) {
    Graph g(GraphOptions{device_});
    std::vector<Tensor> ys;
    {
      AutocastGuard ac(autocast_);
      ys = forward_(g.input("input", x.shape()));
    }
    for (size_t i = 0; i < ys.size(); ++i) g.output(ys[i], "output" + std::to_string(i));
    CompileOptions co;
    co.inference = true;
    exe = std::make_unique<Executable>(std::move(g), co);
    outputs_[x.shape()] = ys.size();
  }
  last_ = exe.get();
  exe->set_input("input", x);
  exe->run();
  std::vector<Tensor> out;
  for (size_t i = 0; i < outputs_[x.shape()]; ++i)
    out.push_back(exe->output("output" + std::to_string(i)));
  return out;
}

void InferenceRunner::refresh() {
  for (auto& [shape, exe] : graphs_) exe->refresh_constants();
}

}  // namespace hr::graph
