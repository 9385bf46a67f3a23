// Static graphs: compilation (fusion, reverse mode, streams and events, memory plan) and
// execution on the CPU and on CUDA.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <iomanip>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

#include "engine/graph.h"
#include "engine/stream.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/fused.h"

namespace hr::graph {

namespace {

int64_t value_bytes(const Value& v) {
  return shape_numel(v.shape) * static_cast<int64_t>(dtype_size(v.dtype));
}

bool planned(const Value& v) {
  return v.kind == ValueKind::Activation || v.kind == ValueKind::Input;
}

cuda::DT dt_of(DType t) {
  switch (t) {
    case DType::f32: return cuda::DT::f32;
    case DType::f16: return cuda::DT::f16;
    case DType::bf16: return cuda::DT::bf16;
    default: throw Error(str_cat("graph: no CUDA kernels for dtype ", dtype_name(t)));
  }
}

// ---------------------------------------------------------------------------------------------
// Fusion: batch_norm -> [add(residual)] -> [relu] as one batch_norm_act node, placed where the
// last fused node was (its inputs are all ready there, and its consumers come after it).
// ---------------------------------------------------------------------------------------------
int64_t fuse_bn_act(Graph& g, std::vector<Node>& nodes, const std::map<std::string, V>& outputs,
                    bool differentiating) {
  const auto& values = g.values();
  std::vector<int> uses(values.size(), 0);
  std::vector<int> consumer(values.size(), -1);
  for (size_t i = 0; i < nodes.size(); ++i)
    for (V v : nodes[i].in)
      if (v >= 0) {
        ++uses[v];
        consumer[v] = static_cast<int>(i);
      }
  std::vector<char> is_output(values.size(), 0);
  for (const auto& [name, v] : outputs) is_output[v] = 1;
  auto single_use = [&](V v) { return uses[v] == 1 && !is_output[v]; };

  std::vector<char> removed(nodes.size(), 0);
  std::map<int, Node> fused_at;  // position -> replacement
  for (size_t b = 0; b < nodes.size(); ++b) {
    const Node& bn = nodes[b];
    if (bn.op != Op::BatchNorm || removed[b]) continue;
    // a backward through inference-mode batch norm stays unfused (rare; keeps one fused path)
    if (!bn.training && differentiating) continue;
    const V y = bn.out[0];
    if (!single_use(y)) continue;
    const int c = consumer[y];
    if (removed[c]) continue;
    Node f = bn;
    f.op = Op::BatchNormAct;
    f.in.push_back(-1);  // residual
    int last = -1;
    if (nodes[c].op == Op::Relu) {
      f.relu = true;
      f.out[0] = nodes[c].out[0];
      last = c;
      removed[c] = 1;
    } else if (nodes[c].op == Op::Add && nodes[c].in[0] != nodes[c].in[1]) {
      f.in[5] = nodes[c].in[0] == y ? nodes[c].in[1] : nodes[c].in[0];
      const V s = nodes[c].out[0];
      removed[c] = 1;
      if (single_use(s) && nodes[consumer[s]].op == Op::Relu && !removed[consumer[s]]) {
        const int r = consumer[s];
        f.relu = true;
        f.out[0] = nodes[r].out[0];
        last = r;
        removed[r] = 1;
      } else {
        f.out[0] = s;
        last = c;
      }
    } else {
      continue;
    }
    f.stream = nodes[last].stream;
    removed[b] = 1;
    fused_at[last] = f;
  }
  std::vector<Node> out;
  out.reserve(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    auto it = fused_at.find(static_cast<int>(i));
    if (it != fused_at.end()) out.push_back(it->second);
    else if (!removed[i]) out.push_back(nodes[i]);
  }
  nodes.swap(out);
  return static_cast<int64_t>(fused_at.size());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The compiled executable
// ---------------------------------------------------------------------------------------------
struct Executable::Impl {
  Graph g;
  CompileOptions opt;
  Device dev;
  PlanStats stats;
  std::vector<int64_t> offset;       // by value; -1 when not in the arena
  std::shared_ptr<Storage> arena;
  std::map<const void*, V> grad_of;  // parameter TensorImpl -> gradient value
  std::vector<Tensor> trained;       // parameters with gradients, first-use order
  V one = -1;                        // the loss seed
  // schedule
  int nstreams = 1;
  std::vector<int> pos;                   // 1-based position of each node on its stream
  std::vector<std::vector<int>> vc_in;    // vector clock of what happens before each node
  std::vector<std::vector<int>> waits;    // per node: producer nodes whose events it waits on
  std::vector<char> records;              // per node: records an event after it
  // CUDA
  std::vector<cuda::Stream> streams;      // [0] = the engine's default stream
  std::vector<cuda::Event> events;        // by node (nullptr where none)
  cuda::GraphExec exec = nullptr;
  std::function<void()> before_replay;
  std::vector<Tensor> batch_counters;  // num_batches_tracked of training batch norms
  // profiling
  bool profiling = false;
  std::map<Op, double> prof_seconds;
  std::map<Op, int64_t> prof_calls;
  int64_t prof_runs = 0;

  V new_value(const Shape& s, DType dt) { return g.new_value(s, dt); }
  const Value& val(V v) const { return g.values_[v]; }

  void differentiate();
  void schedule();
  void plan();
  void* ptr(V v) const;
  Tensor view(V v) const;
  void exec_node(const Node& n);
  void exec_cpu(const Node& n);
  void exec_cuda(const Node& n, cuda::Stream st);
  void launch_all();
  void bump_batch_counters();
};

void Executable::Impl::differentiate() {
  auto& values = g.values_;
  auto& nodes = g.nodes_;
  const V loss = opt.loss;
  HR_CHECK(loss >= 0 && loss < static_cast<V>(values.size()) && values[loss].shape.empty() &&
               values[loss].kind == ValueKind::Activation,
           "graph compile: the loss must be a scalar value computed by the graph");
  // which values depend on a trainable parameter
  std::vector<char> req(values.size(), 0);
  for (size_t v = 0; v < values.size(); ++v)
    if (values[v].kind == ValueKind::Param && values[v].tensor.requires_grad() &&
        is_floating(values[v].dtype))
      req[v] = 1;
  const size_t nfwd = nodes.size();
  for (size_t i = 1; i < nfwd; ++i) {
    bool r = false;
    for (V v : nodes[i].in) r = r || (v >= 0 && req[v]);
    if (!r) continue;
    for (size_t k = 0; k < nodes[i].out.size(); ++k) {
      const V o = nodes[i].out[k];
      // batch-norm saved statistics carry no gradient
      const bool stats = (nodes[i].op == Op::BatchNorm || nodes[i].op == Op::BatchNormAct) && k > 0;
      if (o >= 0 && !stats) req[o] = 1;
    }
  }
  HR_CHECK(req[loss], "graph compile: the loss does not depend on any parameter that requires grad");

  Tensor seed = Tensor::full({}, 1.f, DType::f32, dev);
  one = g.new_value({}, DType::f32, ValueKind::Constant);
  values[one].tensor = seed;
  values[one].name = "loss_seed";
  req.resize(values.size(), 0);

  std::vector<std::vector<V>> parts(values.size());
  parts[loss].push_back(one);
  auto emit = [&](Op op, int fwd, std::vector<V> in, std::vector<V> out) {
    Node n = nodes[fwd];  // attributes
    n.op = op;
    n.in = std::move(in);
    n.out = std::move(out);
    n.forward = fwd;
    n.num_batches_tracked = Tensor();
    const int id = static_cast<int>(nodes.size());
    for (V o : n.out)
      if (o >= 0) values[o].producer = id;
    nodes.push_back(std::move(n));
  };
  auto grad_of_value = [&](V v, int stream) -> V {
    const std::vector<V> p = parts[v];  // a copy: new values grow `parts`
    if (p.empty()) return -1;
    if (p.size() == 1) return p[0];
    const V s = new_value(values[v].shape, values[v].dtype);
    parts.resize(values.size());
    Node n;
    n.op = Op::Sum;
    n.in = p;
    n.out = {s};
    n.stream = stream;
    n.forward = values[v].producer;
    values[s].producer = static_cast<int>(nodes.size());
    nodes.push_back(n);
    parts[v] = {s};
    return s;
  };
  auto fresh = [&](V like) {
    V v = new_value(values[like].shape, values[like].dtype);
    parts.resize(values.size());
    return v;
  };
  auto need = [&](V v) { return v >= 0 && req[v]; };

  for (int i = static_cast<int>(nfwd) - 1; i >= 1; --i) {
    const Node n = nodes[i];
    if (n.out.empty() || !need(n.out[0])) continue;
    const V gy = grad_of_value(n.out[0], n.stream);
    if (gy < 0) continue;
    const auto& in = n.in;
    switch (n.op) {
      case Op::Conv2d: {
        if (need(in[0])) {
          V gx = fresh(in[0]);
          emit(Op::ConvBwdData, i, {gy, in[1]}, {gx});
          parts[in[0]].push_back(gx);
        }
        const bool nw = need(in[1]), nb = need(in[2]);
        if (nw || nb) {
          V gw = fresh(in[1]);
          V gb = nb ? fresh(in[2]) : -1;
          emit(Op::ConvBwdWeight, i, {in[0], gy}, {gw, gb});
          if (nw) parts[in[1]].push_back(gw);
          if (nb) parts[in[2]].push_back(gb);
        }
        break;
      }
      case Op::BatchNorm:
      case Op::BatchNormAct: {
        const bool act = n.op == Op::BatchNormAct;
        const V gx = need(in[0]) ? fresh(in[0]) : -1;
        const V gg = need(in[1]) ? fresh(in[1]) : -1;
        const V gb = need(in[2]) ? fresh(in[2]) : -1;
        const V stat_a = n.training ? n.out[1] : in[3], stat_b = n.training ? n.out[2] : in[4];
        if (!act) {
          emit(Op::BatchNormBwd, i, {in[0], gy, in[1], stat_a, stat_b}, {gx, gg, gb});
        } else {
          HR_CHECK(n.training, "graph compile: batch_norm_act backward needs training mode");
          const V gr = need(in[5]) ? fresh(in[5]) : -1;
          emit(Op::BatchNormActBwd, i, {in[0], n.relu ? n.out[0] : -1, gy, in[1], stat_a, stat_b},
               {gx, gr, gg, gb});
          if (gr >= 0) parts[in[5]].push_back(gr);
        }
        if (gx >= 0) parts[in[0]].push_back(gx);
        if (gg >= 0) parts[in[1]].push_back(gg);
        if (gb >= 0) parts[in[2]].push_back(gb);
        break;
      }
      case Op::Relu: {
        V gx = fresh(in[0]);
        emit(Op::ReluBwd, i, {n.out[0], gy}, {gx});
        parts[in[0]].push_back(gx);
        break;
      }
      case Op::Add:
        if (need(in[0])) parts[in[0]].push_back(gy);
        if (need(in[1])) parts[in[1]].push_back(gy);
        break;
      case Op::UpsampleNearest:
      case Op::UpsampleBilinear:
      case Op::AvgPool:
      case Op::GlobalAvgPool:
      case Op::Cast: {
        if (!need(in[0])) break;
        V gx = fresh(in[0]);
        const Op b = n.op == Op::UpsampleNearest    ? Op::UpsampleNearestBwd
                     : n.op == Op::UpsampleBilinear ? Op::UpsampleBilinearBwd
                     : n.op == Op::AvgPool          ? Op::AvgPoolBwd
                     : n.op == Op::GlobalAvgPool    ? Op::GlobalAvgPoolBwd
                                                    : Op::CastBwd;
        emit(b, i, {gy}, {gx});
        parts[in[0]].push_back(gx);
        break;
      }
      case Op::Concat: {
        std::vector<V> outs;
        bool any = false;
        for (V x : in) {
          outs.push_back(need(x) ? fresh(x) : -1);
          any = any || outs.back() >= 0;
        }
        if (!any) break;
        emit(Op::ConcatBwd, i, {gy}, outs);
        for (size_t k = 0; k < in.size(); ++k)
          if (outs[k] >= 0) parts[in[k]].push_back(outs[k]);
        break;
      }
      case Op::Linear: {
        const V gx = need(in[0]) ? fresh(in[0]) : -1;
        const V gw = need(in[1]) ? fresh(in[1]) : -1;
        const V gb = need(in[2]) ? fresh(in[2]) : -1;
        emit(Op::LinearBwd, i, {in[0], in[1], gy}, {gx, gw, gb});
        if (gx >= 0) parts[in[0]].push_back(gx);
        if (gw >= 0) parts[in[1]].push_back(gw);
        if (gb >= 0) parts[in[2]].push_back(gb);
        break;
      }
      case Op::HeatmapLoss: {
        V gp = fresh(in[0]);
        emit(Op::HeatmapLossBwd, i, {in[0], in[1], in[2], gy}, {gp});
        parts[in[0]].push_back(gp);
        break;
      }
      case Op::CrossEntropy: {
        V gl = fresh(in[0]);
        emit(Op::CrossEntropyBwd, i, {in[0], in[1], gy}, {gl});
        parts[in[0]].push_back(gl);
        break;
      }
      default:
        throw Error(str_cat("graph compile: no backward for ", op_name(n.op)));
    }
  }
  // parameter gradients, in first-use order
  std::vector<char> seen(values.size(), 0);
  for (size_t i = 1; i < nfwd; ++i)
    for (V v : nodes[i].in) {
      if (v < 0 || seen[v] || values[v].kind != ValueKind::Param || !req[v]) continue;
      seen[v] = 1;
      const int stream = parts[v].empty() ? 0 : nodes[values[parts[v][0]].producer].stream;
      const V gv = grad_of_value(v, stream);
      if (gv < 0) continue;
      grad_of[values[v].tensor.impl()] = gv;
      trained.push_back(values[v].tensor);
    }
}

// Streams, positions, vector clocks and the event edges.
void Executable::Impl::schedule() {
  auto& nodes = g.nodes_;
  // dense stream ids, 0 stays the main stream
  std::map<int, int> ids{{0, 0}};
  for (const Node& n : nodes)
    if (!ids.count(n.stream)) {
      const int k = static_cast<int>(ids.size());
      ids[n.stream] = k;
    }
  for (Node& n : nodes) n.stream = opt.streams ? ids[n.stream] : 0;
  nstreams = opt.streams ? static_cast<int>(ids.size()) : 1;
  for (Node& n : nodes)
    if (n.op == Op::Start || n.op == Op::End) n.stream = 0;

  const size_t N = nodes.size();
  pos.assign(N, 0);
  vc_in.assign(N, std::vector<int>(nstreams, 0));
  waits.assign(N, {});
  records.assign(N, 0);
  std::vector<std::vector<int>> vc_after(N);
  std::vector<int> last(nstreams, -1), count(nstreams, 0);
  for (size_t i = 0; i < N; ++i) {
    const Node& n = nodes[i];
    const int s = n.stream;
    std::vector<int> vc = last[s] >= 0 ? vc_after[last[s]] : std::vector<int>(nstreams, 0);
    auto join = [&](int p) {
      if (p < 0 || static_cast<size_t>(p) == i) return;
      const int ps = nodes[p].stream;
      if (ps == s || vc[ps] >= pos[p]) return;  // already ordered
      for (int k = 0; k < nstreams; ++k) vc[k] = std::max(vc[k], vc_after[p][k]);
      waits[i].push_back(p);
      records[p] = 1;
    };
    if (i > 0 && last[s] < 0) join(0);  // a side stream's first node waits for the start
    if (n.op == Op::End)
      for (int k = 0; k < nstreams; ++k) join(last[k]);
    for (V v : n.in)
      if (v >= 0) join(val(v).producer);
    vc_in[i] = vc;
    pos[i] = ++count[s];
    vc[s] = pos[i];
    vc_after[i] = vc;
    last[s] = static_cast<int>(i);
  }
  int64_t nev = 0;
  for (char r : records) nev += r;
  stats.events = nev;
  stats.streams = nstreams;
  stats.nodes = static_cast<int64_t>(N);
}

namespace {

struct Buf {
  V v;
  int64_t bytes;
  int def;
  std::vector<int> last;  // per stream: latest position of an access (0: none)
  int first_order, last_order;
  bool input;
};

}  // namespace

void Executable::Impl::plan() {
  const auto& nodes = g.nodes_;
  const size_t NV = g.values_.size();
  std::vector<int> buf_of(NV, -1);
  std::vector<Buf> bufs;
  auto touch = [&](V v, int node) {
    if (v < 0 || !planned(val(v))) return;
    if (buf_of[v] < 0) {
      buf_of[v] = static_cast<int>(bufs.size());
      Buf b{v, value_bytes(val(v)), val(v).producer, std::vector<int>(nstreams, 0), node, node,
            val(v).kind == ValueKind::Input};
      bufs.push_back(b);
    }
    Buf& b = bufs[buf_of[v]];
    const int s = nodes[node].stream;
    b.last[s] = std::max(b.last[s], pos[node]);
    b.first_order = std::min(b.first_order, node);
    b.last_order = std::max(b.last_order, node);
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (V v : nodes[i].out) touch(v, static_cast<int>(i));
    for (V v : nodes[i].in) touch(v, static_cast<int>(i));
  }
  // a's accesses all happen before b's definition
  auto before = [&](const Buf& a, const Buf& b) {
    const auto& vc = vc_in[b.def];
    for (int s = 0; s < nstreams; ++s)
      if (a.last[s] > vc[s]) return false;
    return true;
  };
  auto conflict = [&](const Buf& a, const Buf& b) {
    // inputs keep their contents across runs (set once, run many times): never shared
    if (a.input || b.input) return true;
    return !before(a, b) && !before(b, a);
  };

  const int64_t align = 256;
  std::vector<int> order(bufs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return bufs[a].bytes > bufs[b].bytes; });
  offset.assign(NV, -1);
  std::vector<int> placed;
  int64_t arena = 0, total = 0;
  for (int bi : order) {
    const Buf& b = bufs[bi];
    const int64_t size = std::max<int64_t>(align, (b.bytes + align - 1) / align * align);
    total += size;
    std::vector<std::pair<int64_t, int64_t>> taken;
    for (int pi : placed)
      if (conflict(bufs[pi], b)) {
        const int64_t o = offset[bufs[pi].v];
        taken.emplace_back(o, o + std::max<int64_t>(align, (bufs[pi].bytes + align - 1) / align * align));
      }
    std::sort(taken.begin(), taken.end());
    int64_t at = 0;
    for (const auto& [lo, hi] : taken) {
      if (lo >= at + size) break;
      at = std::max(at, hi);
    }
    offset[b.v] = at;
    arena = std::max(arena, at + size);
    placed.push_back(bi);
  }
  // most bytes alive at once in program order
  std::vector<int64_t> delta(nodes.size() + 1, 0);
  for (const Buf& b : bufs) {
    const int64_t size = (b.bytes + align - 1) / align * align;
    delta[b.first_order] += size;
    delta[b.last_order + 1] -= size;
  }
  int64_t live = 0, peak = 0;
  for (int64_t d : delta) peak = std::max(peak, live += d);
  stats.arena_bytes = arena;
  stats.total_bytes = total;
  stats.peak_live_bytes = peak;
}

void* Executable::Impl::ptr(V v) const {
  if (v < 0) return nullptr;
  const Value& x = val(v);
  if (x.kind == ValueKind::Param || x.kind == ValueKind::Constant) return x.tensor.raw_data();
  HR_CHECK(offset[v] >= 0, "graph: value %", v, " has no buffer");
  return static_cast<char*>(arena->data()) + offset[v];
}

Tensor Executable::Impl::view(V v) const {
  const Value& x = val(v);
  HR_CHECK(arena || x.kind == ValueKind::Param || x.kind == ValueKind::Constant,
           "graph: compiled with allocate = false (plan only): no buffers");
  if (x.kind == ValueKind::Param || x.kind == ValueKind::Constant) return x.tensor;
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = arena;
  impl->offset = offset[v] / static_cast<int64_t>(dtype_size(x.dtype));
  impl->shape = x.shape;
  impl->dtype = x.dtype;
  impl->strides = make_strides(x.shape, dev.is_cuda() && x.shape.size() == 4
                                            ? MemoryFormat::ChannelsLast
                                            : MemoryFormat::Contiguous);
  return Tensor(impl);
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------
namespace {

kern::ConvShape conv_shape(const Shape& x, int64_t K, int64_t R, int64_t S, const Node& n) {
  return kern::ConvShape::make(x[0], x[1], x[2], x[3], K, R, S, n.stride[0], n.stride[1],
                               n.padding[0], n.padding[1]);
}

kern::ResampleShape resample_shape(const Shape& x, const Shape& y, const Node& n, bool nearest) {
  return kern::ResampleShape::make(x[0], x[1], x[2], x[3], y[2], y[3], !nearest, n.align_corners,
                                   nearest ? n.scale : 0.0);
}

kern::PoolShape pool_shape(const Shape& x, const Node& n) {
  return kern::PoolShape::make(x[0], x[1], x[2], x[3], n.kernel[0], n.kernel[1], n.stride[0],
                               n.stride[1], n.padding[0], n.padding[1], n.count_include_pad);
}

int64_t spatial(const Shape& s) {
  int64_t hw = 1;
  for (size_t d = 2; d < s.size(); ++d) hw *= s[d];
  return hw;
}

}  // namespace

void Executable::Impl::exec_cpu(const Node& n) {
  auto F = [&](V v) { return static_cast<float*>(ptr(v)); };
  auto S = [&](V v) -> const Shape& { return val(v).shape; };
  const auto& in = n.in;
  const auto& out = n.out;
  switch (n.op) {
    case Op::Start:
    case Op::End:
      return;
    case Op::Conv2d: {
      const Shape& w = S(in[1]);
      cpu::conv2d_forward(conv_shape(S(in[0]), w[0], w[2], w[3], n), F(in[0]), F(in[1]), F(in[2]),
                          F(out[0]));
      return;
    }
    case Op::ConvBwdData: {
      const Shape& w = S(in[1]);
      cpu::conv2d_backward_data(conv_shape(S(out[0]), w[0], w[2], w[3], n), F(in[0]), F(in[1]),
                                F(out[0]));
      return;
    }
    case Op::ConvBwdWeight: {
      const Shape& x = S(in[0]);
      const Shape& w = S(out[0]);  // the weight gradient has the weight's shape
      cpu::conv2d_backward_weight(conv_shape(x, w[0], w[2], w[3], n), F(in[0]), F(in[1]),
                                  F(out[0]), F(out[1]));
      return;
    }
    case Op::BatchNorm:
    case Op::BatchNormAct: {
      const Shape& x = S(in[0]);
      const bool act = n.op == Op::BatchNormAct;
      const float* res = act ? F(in[5]) : nullptr;
      const bool relu = act && n.relu;
      if (n.training)
        cpu::batchnorm_act_train_forward(x[0], x[1], spatial(x), F(in[0]), F(in[1]), F(in[2]),
                                         n.eps, n.momentum, F(in[3]), F(in[4]), res, relu,
                                         F(out[0]), F(out[1]), F(out[2]));
      else
        cpu::batchnorm_act_infer_forward(x[0], x[1], spatial(x), F(in[0]), F(in[1]), F(in[2]),
                                         F(in[3]), F(in[4]), n.eps, res, relu, F(out[0]));
      return;
    }
    case Op::BatchNormBwd: {
      const Shape& x = S(in[0]);
      if (n.training)
        cpu::batchnorm_train_backward(x[0], x[1], spatial(x), F(in[0]), F(in[1]), F(in[2]),
                                      F(in[3]), F(in[4]), F(out[0]), F(out[1]), F(out[2]));
      else
        cpu::batchnorm_infer_backward(x[0], x[1], spatial(x), F(in[0]), F(in[1]), F(in[2]),
                                      F(in[3]), F(in[4]), n.eps, F(out[0]), F(out[1]), F(out[2]));
      return;
    }
    case Op::BatchNormActBwd: {
      const Shape& x = S(in[0]);
      cpu::batchnorm_act_train_backward(x[0], x[1], spatial(x), F(in[0]), F(in[1]), F(in[2]),
                                        F(in[3]), F(in[4]), F(in[5]), n.relu, F(out[0]), F(out[1]),
                                        F(out[2]), F(out[3]));
      return;
    }
    case Op::Relu:
      cpu::relu_forward(shape_numel(S(in[0])), F(in[0]), F(out[0]));
      return;
    case Op::ReluBwd:
      cpu::relu_backward(shape_numel(S(in[0])), F(in[0]), F(in[1]), F(out[0]));
      return;
    case Op::Add:
      cpu::add(shape_numel(S(in[0])), F(in[0]), F(in[1]), F(out[0]));
      return;
    case Op::Sum: {
      const int64_t cnt = shape_numel(S(out[0]));
      cpu::add(cnt, F(in[0]), F(in[1]), F(out[0]));
      for (size_t k = 2; k < in.size(); ++k) cpu::axpy(cnt, 1.f, F(in[k]), F(out[0]));
      return;
    }
    case Op::UpsampleNearest:
      cpu::upsample_nearest_forward(resample_shape(S(in[0]), S(out[0]), n, true), F(in[0]), F(out[0]));
      return;
    case Op::UpsampleNearestBwd:
      cpu::upsample_nearest_backward(resample_shape(S(out[0]), S(in[0]), n, true), F(in[0]),
                                     F(out[0]));
      return;
    case Op::UpsampleBilinear:
      cpu::upsample_bilinear_forward(resample_shape(S(in[0]), S(out[0]), n, false), F(in[0]),
                                     F(out[0]));
      return;
    case Op::UpsampleBilinearBwd:
      cpu::upsample_bilinear_backward(resample_shape(S(out[0]), S(in[0]), n, false), F(in[0]),
                                      F(out[0]));
      return;
    case Op::Concat:
    case Op::ConcatBwd: {
      // channel slabs of [N, C, inner]
      const bool fwd = n.op == Op::Concat;
      const V big = fwd ? out[0] : in[0];
      const Shape& bs = S(big);
      const int64_t inner = shape_numel(bs) / (bs[0] * bs[1]);
      const auto& parts = fwd ? in : out;
      int64_t c0 = 0;
      const Node& f = fwd ? n : g.nodes_[n.forward];
      for (size_t k = 0; k < parts.size(); ++k) {
        const int64_t ck = S(f.in[k])[1];
        if (parts[k] >= 0) {
          float* b = F(big);
          float* p = F(parts[k]);
          for (int64_t i = 0; i < bs[0]; ++i) {
            float* bb = b + (i * bs[1] + c0) * inner;
            float* pp = p + i * ck * inner;
            if (fwd) std::memcpy(bb, pp, sizeof(float) * ck * inner);
            else std::memcpy(pp, bb, sizeof(float) * ck * inner);
          }
        }
        c0 += ck;
      }
      return;
    }
    case Op::AvgPool:
      cpu::avgpool2d_forward(pool_shape(S(in[0]), n), F(in[0]), F(out[0]));
      return;
    case Op::AvgPoolBwd:
      cpu::avgpool2d_backward(pool_shape(S(out[0]), n), F(in[0]), F(out[0]));
      return;
    case Op::GlobalAvgPool: {
      const Shape& x = S(in[0]);
      cpu::global_avgpool_forward(x[0], x[1], spatial(x), F(in[0]), F(out[0]));
      return;
    }
    case Op::GlobalAvgPoolBwd: {
      const Shape& x = S(out[0]);
      cpu::global_avgpool_backward(x[0], x[1], spatial(x), F(in[0]), F(out[0]));
      return;
    }
    case Op::Linear: {
      const Shape& x = S(in[0]);
      const Shape& w = S(in[1]);
      cpu::linear_forward(x[0], x[1], w[0], F(in[0]), F(in[1]), F(in[2]), F(out[0]));
      return;
    }
    case Op::LinearBwd: {
      const Shape& x = S(in[0]);
      const Shape& w = S(in[1]);
      cpu::linear_backward(x[0], x[1], w[0], F(in[0]), F(in[1]), F(in[2]), F(out[0]), F(out[1]),
                           F(out[2]));
      return;
    }
    case Op::Cast:
    case Op::CastBwd:
      throw Error("graph: casts run on CUDA only");
    case Op::HeatmapLoss: {
      const Shape& p = S(in[0]);
      *F(out[0]) = cpu::heatmap_loss_forward(p[0], p[1], spatial(p), F(in[0]), F(in[1]), F(in[2]));
      return;
    }
    case Op::HeatmapLossBwd: {
      const Shape& p = S(in[0]);
      cpu::heatmap_loss_backward(p[0], p[1], spatial(p), F(in[0]), F(in[1]), F(in[2]), *F(in[3]),
                                 F(out[0]));
      return;
    }
    case Op::CrossEntropy: {
      const Shape& l = S(in[0]);
      *F(out[0]) = cpu::softmax_ce_forward(l[0], l[1], spatial(l), F(in[0]),
                                           static_cast<const int64_t*>(ptr(in[1])), n.ignore_index);
      return;
    }
    case Op::CrossEntropyBwd: {
      const Shape& l = S(in[0]);
      cpu::softmax_ce_backward(l[0], l[1], spatial(l), F(in[0]),
                               static_cast<const int64_t*>(ptr(in[1])), n.ignore_index, *F(in[2]),
                               F(out[0]));
      return;
    }
  }
  throw Error(str_cat("graph: no CPU kernel for ", op_name(n.op)));
}

void Executable::Impl::exec_cuda(const Node& n, cuda::Stream st) {
  auto P = [&](V v) { return ptr(v); };
  auto F = [&](V v) { return static_cast<float*>(ptr(v)); };
  auto S = [&](V v) -> const Shape& { return val(v).shape; };
  auto D = [&](V v) { return dt_of(val(v).dtype); };
  const auto& in = n.in;
  const auto& out = n.out;
  switch (n.op) {
    case Op::Start:
    case Op::End:
      return;
    case Op::Conv2d: {
      const Shape& w = S(in[1]);
      cuda::conv2d_forward(conv_shape(S(in[0]), w[0], w[2], w[3], n), D(in[0]), P(in[0]), P(in[1]),
                           F(in[2]), P(out[0]), st);
      return;
    }
    case Op::ConvBwdData: {
      const Shape& w = S(in[1]);
      cuda::conv2d_backward_data(conv_shape(S(out[0]), w[0], w[2], w[3], n), D(in[0]), P(in[0]),
                                 P(in[1]), P(out[0]), st);
      return;
    }
    case Op::ConvBwdWeight: {
      const Shape& w = S(out[0]);  // the weight gradient has the weight's shape
      cuda::conv2d_backward_weight(conv_shape(S(in[0]), w[0], w[2], w[3], n), D(in[0]), P(in[0]),
                                   P(in[1]), P(out[0]), F(out[1]), st);
      return;
    }
    case Op::BatchNorm:
    case Op::BatchNormAct: {
      const Shape& x = S(in[0]);
      const int64_t M = x[0] * spatial(x);
      const bool act = n.op == Op::BatchNormAct;
      const void* res = act ? P(in[5]) : nullptr;
      const bool relu = act && n.relu;
      if (n.training)
        cuda::batchnorm_act_train_forward(D(in[0]), M, x[1], P(in[0]), F(in[1]), F(in[2]), n.eps,
                                          n.momentum, F(in[3]), F(in[4]), res, relu, P(out[0]),
                                          F(out[1]), F(out[2]), st);
      else
        cuda::batchnorm_act_infer_forward(D(in[0]), M, x[1], P(in[0]), F(in[1]), F(in[2]),
                                          F(in[3]), F(in[4]), n.eps, res, relu, P(out[0]), st);
      return;
    }
    case Op::BatchNormBwd: {
      const Shape& x = S(in[0]);
      const int64_t M = x[0] * spatial(x);
      if (n.training)
        cuda::batchnorm_train_backward(D(in[0]), M, x[1], P(in[0]), P(in[1]), F(in[2]), F(in[3]),
                                       F(in[4]), P(out[0]), F(out[1]), F(out[2]), st);
      else
        cuda::batchnorm_infer_backward(D(in[0]), M, x[1], P(in[0]), P(in[1]), F(in[2]), F(in[3]),
                                       F(in[4]), n.eps, P(out[0]), F(out[1]), F(out[2]), st);
      return;
    }
    case Op::BatchNormActBwd: {
      const Shape& x = S(in[0]);
      cuda::batchnorm_act_train_backward(D(in[0]), x[0] * spatial(x), x[1], P(in[0]), P(in[1]),
                                         P(in[2]), F(in[3]), F(in[4]), F(in[5]), n.relu, P(out[0]),
                                         P(out[1]), F(out[2]), F(out[3]), st);
      return;
    }
    case Op::Relu:
      cuda::relu_forward(D(in[0]), shape_numel(S(in[0])), P(in[0]), P(out[0]), st);
      return;
    case Op::ReluBwd:
      cuda::relu_backward(D(in[0]), shape_numel(S(in[0])), P(in[0]), P(in[1]), P(out[0]), st);
      return;
    case Op::Add:
      cuda::add(D(in[0]), shape_numel(S(in[0])), P(in[0]), P(in[1]), P(out[0]), st);
      return;
    case Op::Sum: {
      const int64_t cnt = shape_numel(S(out[0]));
      cuda::add(D(out[0]), cnt, P(in[0]), P(in[1]), P(out[0]), st);
      for (size_t k = 2; k < in.size(); ++k) cuda::axpy(D(out[0]), cnt, 1.f, P(in[k]), P(out[0]), st);
      return;
    }
    case Op::UpsampleNearest:
      cuda::upsample_nearest_forward(D(in[0]), resample_shape(S(in[0]), S(out[0]), n, true),
                                     P(in[0]), P(out[0]), st);
      return;
    case Op::UpsampleNearestBwd:
      cuda::upsample_nearest_backward(D(in[0]), resample_shape(S(out[0]), S(in[0]), n, true),
                                      P(in[0]), P(out[0]), st);
      return;
    case Op::UpsampleBilinear:
      cuda::upsample_bilinear_forward(D(in[0]), resample_shape(S(in[0]), S(out[0]), n, false),
                                      P(in[0]), P(out[0]), st);
      return;
    case Op::UpsampleBilinearBwd:
      cuda::upsample_bilinear_backward(D(in[0]), resample_shape(S(out[0]), S(in[0]), n, false),
                                       P(in[0]), P(out[0]), st);
      return;
    case Op::Concat:
    case Op::ConcatBwd: {
      const bool fwd = n.op == Op::Concat;
      const V big = fwd ? out[0] : in[0];
      const Shape& bs = S(big);
      const size_t es = dtype_size(val(big).dtype);
      const Node& f = fwd ? n : g.nodes_[n.forward];
      const auto& parts = fwd ? in : out;
      // NHWC (4-D) or [N, C]: rows of N*H*W, channel slabs inside each row
      const size_t rows = static_cast<size_t>(shape_numel(bs) / bs[1]);
      int64_t c0 = 0;
      for (size_t k = 0; k < parts.size(); ++k) {
        const int64_t ck = S(f.in[k])[1];
        if (parts[k] >= 0) {
          char* b = static_cast<char*>(P(big)) + c0 * es;
          if (fwd) cuda::memcpy_2d(b, bs[1] * es, P(parts[k]), ck * es, ck * es, rows, st);
          else cuda::memcpy_2d(P(parts[k]), ck * es, b, bs[1] * es, ck * es, rows, st);
        }
        c0 += ck;
      }
      return;
    }
    case Op::AvgPool:
      cuda::avgpool2d_forward(D(in[0]), pool_shape(S(in[0]), n), P(in[0]), P(out[0]), st);
      return;
    case Op::AvgPoolBwd:
      cuda::avgpool2d_backward(D(in[0]), pool_shape(S(out[0]), n), P(in[0]), P(out[0]),
                               st);
      return;
    case Op::GlobalAvgPool: {
      const Shape& x = S(in[0]);
      cuda::global_avgpool_forward(D(in[0]), x[0], x[1], spatial(x), P(in[0]), P(out[0]), st);
      return;
    }
    case Op::GlobalAvgPoolBwd: {
      const Shape& x = S(out[0]);
      cuda::global_avgpool_backward(D(in[0]), x[0], x[1], spatial(x), P(in[0]), P(out[0]), st);
      return;
    }
    case Op::Linear: {
      const Shape& x = S(in[0]);
      const Shape& w = S(in[1]);
      cuda::linear_forward(D(in[0]), x[0], x[1], w[0], P(in[0]), P(in[1]), F(in[2]), P(out[0]), st);
      return;
    }
    case Op::LinearBwd: {
      const Shape& x = S(in[0]);
      const Shape& w = S(in[1]);
      cuda::linear_backward(D(in[0]), x[0], x[1], w[0], P(in[0]), P(in[1]), P(in[2]), P(out[0]),
                            P(out[1]), F(out[2]), st);
      return;
    }
    case Op::Cast:
    case Op::CastBwd:
      cuda::convert(shape_numel(S(in[0])), D(in[0]), P(in[0]), D(out[0]), P(out[0]), st);
      return;
    case Op::HeatmapLoss: {
      const Shape& p = S(in[0]);
      cuda::heatmap_loss_forward_dev(D(in[0]), p[0], p[1], spatial(p), P(in[0]), P(in[1]),
                                     F(in[2]), F(out[0]), st);
      return;
    }
    case Op::HeatmapLossBwd: {
      const Shape& p = S(in[0]);
      cuda::heatmap_loss_backward_dev(D(in[0]), p[0], p[1], spatial(p), P(in[0]), P(in[1]),
                                      F(in[2]), F(in[3]), P(out[0]), st);
      return;
    }
    case Op::CrossEntropy: {
      const Shape& l = S(in[0]);
      cuda::softmax_ce_forward_dev(D(in[0]), l[0], l[1], spatial(l), P(in[0]),
                                   static_cast<const int64_t*>(P(in[1])), n.ignore_index, F(out[0]),
                                   st);
      return;
    }
    case Op::CrossEntropyBwd: {
      const Shape& l = S(in[0]);
      cuda::softmax_ce_backward_dev(D(in[0]), l[0], l[1], spatial(l), P(in[0]),
                                    static_cast<const int64_t*>(P(in[1])), n.ignore_index, F(in[2]),
                                    P(out[0]), st);
      return;
    }
  }
  throw Error(str_cat("graph: no CUDA kernel for ", op_name(n.op)));
}

void Executable::Impl::exec_node(const Node& n) {
  if (!profiling || dev.is_cuda()) {
    if (dev.is_cuda()) exec_cuda(n, streams[n.stream]);
    else exec_cpu(n);
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  exec_cpu(n);
  prof_seconds[n.op] +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++prof_calls[n.op];
}

void Executable::Impl::bump_batch_counters() {
  for (const Tensor& t : batch_counters) t.data<int64_t>()[0] += 1;
}

// Every node in program order; on CUDA each on its stream, with the planned waits and records.
void Executable::Impl::launch_all() {
  const auto& nodes = g.nodes_;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    if (dev.is_cuda()) {
      cuda::Stream st = streams[n.stream];
      for (int p : waits[i]) cuda::wait_event(st, events[p]);
      exec_node(n);
      if (records[i]) cuda::record_event(events[i], st);
    } else {
      exec_node(n);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Executable
// ---------------------------------------------------------------------------------------------
Executable::Executable(Graph graph, const CompileOptions& opt) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.g = std::move(graph);
  m.opt = opt;
  m.dev = m.g.options().device;
  HR_CHECK(m.dev.is_cpu() || cuda::available() || !opt.allocate, "graph compile: the graph is for ",
           m.dev.str(), " but no CUDA device is available");
  if (opt.fuse) m.stats.fused = fuse_bn_act(m.g, m.g.nodes_, m.g.outputs_, opt.loss >= 0);
  // values' producers after fusion
  for (size_t i = 0; i < m.g.nodes_.size(); ++i)
    for (V o : m.g.nodes_[i].out)
      if (o >= 0) m.g.values_[o].producer = static_cast<int>(i);
  if (opt.loss >= 0) m.differentiate();
  Node end;
  end.op = Op::End;
  for (const auto& [name, v] : m.g.outputs_) end.in.push_back(v);
  for (const auto& [impl, v] : m.grad_of) end.in.push_back(v);
  m.g.nodes_.push_back(end);
  m.schedule();
  m.plan();
  for (const Node& n : m.g.nodes_)
    if ((n.op == Op::BatchNorm || n.op == Op::BatchNormAct) && n.training &&
        n.num_batches_tracked.defined())
      m.batch_counters.push_back(n.num_batches_tracked);
  if (!opt.allocate) return;
  m.arena = std::make_shared<Storage>(static_cast<size_t>(std::max<int64_t>(m.stats.arena_bytes, 256)),
                                      m.dev);
  if (m.dev.is_cuda()) {
    m.streams.push_back(cuda::default_stream());
    for (int s = 1; s < m.nstreams; ++s) m.streams.push_back(cuda::create_stream());
    m.events.assign(m.g.nodes_.size(), nullptr);
    for (size_t i = 0; i < m.g.nodes_.size(); ++i)
      if (m.records[i]) m.events[i] = cuda::create_event();
  }
}

Executable::~Executable() {
  Impl& m = *impl_;
  if (!m.dev.is_cuda()) return;
  try {
    for (cuda::Stream s : m.streams) cuda::synchronize(s);
    if (m.exec) cuda::destroy_graph(m.exec);
    for (cuda::Event e : m.events)
      if (e) cuda::destroy_event(e);
    for (size_t s = 1; s < m.streams.size(); ++s) cuda::destroy_stream(m.streams[s]);
  } catch (...) {
  }
}

void Executable::set_input(const std::string& name, const Tensor& t) {
  Impl& m = *impl_;
  auto it = m.g.inputs_.find(name);
  HR_CHECK(it != m.g.inputs_.end(), "graph set_input: no input named '", name, "'");
  const Value& v = m.val(it->second);
  HR_CHECK(t.defined() && t.shape() == v.shape, "graph set_input '", name, "': expected ",
           dtype_name(v.dtype), shape_str(v.shape), ", got ", t.defined() ? t.str() : "undefined");
  Tensor dst = m.view(it->second);
  if (m.dev.is_cuda()) {
    StreamGuard guard(m.streams[0]);
    dst.copy_(t.dtype() == v.dtype ? t : t.to(v.dtype));
  } else {
    dst.copy_(t.dtype() == v.dtype ? t : t.to(v.dtype));
  }
}

void Executable::run() {
  Impl& m = *impl_;
  HR_CHECK(m.arena, "graph run: compiled with allocate = false (plan only)");
  m.bump_batch_counters();
  if (m.exec) {
    if (m.before_replay) m.before_replay();
    cuda::launch_graph(m.exec, m.streams[0]);
    return;
  }
  if (m.profiling && m.dev.is_cpu()) ++m.prof_runs;
  m.launch_all();
}

void Executable::capture(std::function<void()> after, std::function<void()> before_replay) {
  Impl& m = *impl_;
  HR_CHECK(m.dev.is_cuda(), "graph capture: CUDA graphs need a CUDA device (the graph is for ",
           m.dev.str(), ")");
  if (m.exec) return;
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
  m.bump_batch_counters();
  const auto& nodes = m.g.nodes_;
  std::vector<std::vector<int>> queue(m.nstreams);
  for (size_t i = 0; i < nodes.size(); ++i) queue[nodes[i].stream].push_back(static_cast<int>(i));
  std::vector<size_t> head(m.nstreams, 0);
  std::vector<char> done(nodes.size(), 0);
  std::mt19937_64 rng(seed);
  size_t remaining = nodes.size();
  while (remaining > 0) {
    std::vector<int> ready;
    for (int s = 0; s < m.nstreams; ++s) {
      if (head[s] >= queue[s].size()) continue;
      const int i = queue[s][head[s]];
      bool ok = true;
      for (int p : m.waits[i]) ok = ok && done[p];
      if (ok) ready.push_back(s);
    }
    HR_CHECK(!ready.empty(), "graph run_interleaved: deadlock (a bug in the schedule)");
    const int s = ready[rng() % ready.size()];
    const int i = queue[s][head[s]++];
    m.exec_node(nodes[i]);
    done[i] = 1;
    --remaining;
  }
}

void Executable::verify_plan() const {
  const Impl& m = *impl_;
  const auto& nodes = m.g.nodes_;
  // accesses per value
  std::map<V, std::vector<int>> acc;
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (V v : nodes[i].out)
      if (v >= 0 && m.offset[v] >= 0) acc[v].push_back(static_cast<int>(i));
    for (V v : nodes[i].in)
      if (v >= 0 && m.offset[v] >= 0) acc[v].push_back(static_cast<int>(i));
  }
  auto hb = [&](int a, int b) {  // node a happens before node b
    return a != b && m.pos[a] <= m.vc_in[b][nodes[a].stream];
  };
  auto all_before = [&](V a, V b) {
    const int def = m.val(b).producer;
    for (int x : acc[a])
      if (!hb(x, def)) return false;
    return true;
  };
  std::vector<V> vs;
  for (const auto& [v, a] : acc) vs.push_back(v);
  for (size_t i = 0; i < vs.size(); ++i)
    for (size_t j = i + 1; j < vs.size(); ++j) {
      const V a = vs[i], b = vs[j];
      const int64_t a0 = m.offset[a], a1 = a0 + value_bytes(m.val(a));
      const int64_t b0 = m.offset[b], b1 = b0 + value_bytes(m.val(b));
      if (a1 <= b0 || b1 <= a0) continue;
      HR_CHECK(all_before(a, b) || all_before(b, a), "graph plan: values %", a, " and %", b,
               " share arena bytes but their accesses are not ordered");
    }
}

Tensor Executable::output(const std::string& name) const {
  auto it = impl_->g.outputs_.find(name);
  HR_CHECK(it != impl_->g.outputs_.end(), "graph output: no output named '", name, "'");
  return impl_->view(it->second);
}

Tensor Executable::grad(const Tensor& param) const {
  auto it = impl_->grad_of.find(param.impl());
  return it == impl_->grad_of.end() ? Tensor() : impl_->view(it->second);
}

std::vector<Tensor> Executable::trained_parameters() const { return impl_->trained; }

void Executable::set_profiling(bool on) { impl_->profiling = on; }

std::string Executable::profile_report() const {
  const Impl& m = *impl_;
  std::vector<std::pair<double, Op>> rows;
  double total = 0;
  for (const auto& [op, s] : m.prof_seconds) {
    rows.emplace_back(s, op);
    total += s;
  }
  std::sort(rows.rbegin(), rows.rend());
  std::ostringstream os;
  const double runs = std::max<int64_t>(1, m.prof_runs);
  os << std::left << std::setw(24) << "op" << std::right << std::setw(12) << "ms/run"
     << std::setw(8) << "share" << std::setw(10) << "calls/run" << "\n";
  for (const auto& [s, op] : rows)
    os << std::left << std::setw(24) << op_name(op) << std::right << std::fixed
       << std::setprecision(2) << std::setw(12) << 1e3 * s / runs << std::setw(7)
       << std::setprecision(1) << 100 * s / std::max(total, 1e-12) << "%" << std::setw(10)
       << m.prof_calls.at(op) / static_cast<int64_t>(runs) << "\n";
  os << std::left << std::setw(24) << "total" << std::right << std::fixed << std::setprecision(2)
     << std::setw(12) << 1e3 * total / runs << "\n";
  return os.str();
}

const PlanStats& Executable::stats() const { return impl_->stats; }
const Graph& Executable::graph() const { return impl_->g; }

}  // namespace hr::graph
