// Convolutions through cuDNN's graph API (conv_cudnn_graph.h).
#include "kernels/cuda/conv_cudnn_graph.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cuda/check.h"

#ifdef HR_WITH_CUDNN_FRONTEND
#include <cudnn_frontend.h>

#include <cmath>
#include <unordered_map>
#include <vector>
#endif

namespace hr::cuda::cudnn_graph {

namespace {
bool env_is(const char* name, const char* value) {
  const char* e = std::getenv(name);
  return e && std::strcmp(e, value) == 0;
}
}  // namespace

#ifndef HR_WITH_CUDNN_FRONTEND

struct Plan {};
bool built() { return false; }
bool enabled() { return false; }
std::shared_ptr<Plan> choose(int, const kern::ConvShape&, DT, bool, size_t, const void*,
                             const void*, void*, cudnnHandle_t, Stream) {
  return nullptr;
}
void run(const Plan&, const void*, const void*, void*, cudnnHandle_t, Stream) {
  throw Error("cudnn_graph::run: this build has no cuDNN frontend");
}

#else

namespace fe = cudnn_frontend;
using Tensor = std::shared_ptr<fe::graph::Tensor_attributes>;

struct Plan {
  std::unique_ptr<fe::graph::Graph> graph;
  Tensor a, b, out;
  int64_t index = -1;      // the chosen execution plan
  int64_t workspace = 0;   // its workspace bytes
};

bool built() { return true; }
bool enabled() {
  static const bool on = !env_is("HR_CUDNN_API", "legacy");
  return on;
}

namespace {

bool verbose() {  // HR_CUDNN_VERBOSE=1, read once
  static const bool on = env_is("HR_CUDNN_VERBOSE", "1");
  return on;
}

const char* op_name(int op) {
  return op == kFwd ? "conv2d_forward" : op == kBwdData ? "conv2d_backward_data"
                                                        : "conv2d_backward_weight";
}

fe::DataType_t fe_type(DT dt) {
  return dt == DT::f32 ? fe::DataType_t::FLOAT
                       : dt == DT::f16 ? fe::DataType_t::HALF : fe::DataType_t::BFLOAT16;
}

// An activation [n, c, h, w] stored NHWC, or a filter [k, c, r, s] stored KRSC.
Tensor nhwc_tensor(fe::graph::Graph& g, const char* name, int64_t n, int64_t c, int64_t h,
                   int64_t w) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name(name)
                      .set_dim({n, c, h, w})
                      .set_stride({c * h * w, 1, c * w, c}));
}
void set_nhwc(const Tensor& t, int64_t n, int64_t c, int64_t h, int64_t w) {
  t->set_output(true).set_dim({n, c, h, w}).set_stride({c * h * w, 1, c * w, c});
}

std::unordered_map<Tensor, void*> pack(const Plan& p, const void* a, const void* b, void* out) {
  return {{p.a, const_cast<void*>(a)}, {p.b, const_cast<void*>(b)}, {p.out, out}};
}

std::shared_ptr<Plan> choose_plan(int op, const kern::ConvShape& s, DT dt, bool tf32,
                                  size_t workspace_cap, const void* a, const void* b, void* out,
                                  cudnnHandle_t h, Stream st) {
  auto report = [&](const std::string& what) {
    if (verbose())
      std::fprintf(stderr, "cudnn graph: %s N%lld C%lld %lldx%lld K%lld %lldx%lld/%lld %s: %s\n",
                   op_name(op), (long long)s.N, (long long)s.C, (long long)s.H, (long long)s.W,
                   (long long)s.K, (long long)s.R, (long long)s.S, (long long)s.stride_h,
                   detail::dt_name(dt), what.c_str());
  };
  auto declined = [&](const std::string& why) -> std::shared_ptr<Plan> {
    report("the legacy API runs it: " + why);
    return nullptr;
  };
  auto p = std::make_shared<Plan>();
  p->graph = std::make_unique<fe::graph::Graph>();
  fe::graph::Graph& g = *p->graph;
  g.set_io_data_type(fe_type(dt))
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  const std::vector<int64_t> pad{s.pad_h, s.pad_w}, stride{s.stride_h, s.stride_w}, dil{1, 1};
  auto geometry = [&](auto attrs) {
    attrs.set_padding(pad).set_stride(stride).set_dilation(dil);
    return attrs;
  };
  auto x = [&] { return nhwc_tensor(g, "x", s.N, s.C, s.H, s.W); };
  auto w = [&] { return nhwc_tensor(g, "w", s.K, s.C, s.R, s.S); };
  auto dy = [&] { return nhwc_tensor(g, "dy", s.N, s.K, s.P, s.Q); };
  if (op == kFwd) {
    p->a = x();
    p->b = w();
    p->out = g.conv_fprop(p->a, p->b, geometry(fe::graph::Conv_fprop_attributes()));
    set_nhwc(p->out, s.N, s.K, s.P, s.Q);
  } else if (op == kBwdData) {
    p->a = dy();
    p->b = w();
    p->out = g.conv_dgrad(p->a, p->b, geometry(fe::graph::Conv_dgrad_attributes()));
    set_nhwc(p->out, s.N, s.C, s.H, s.W);
  } else {
    p->a = x();
    p->b = dy();
    p->out = g.conv_wgrad(p->b, p->a, geometry(fe::graph::Conv_wgrad_attributes()));
    set_nhwc(p->out, s.K, s.C, s.R, s.S);
  }
  if (auto e = g.validate(); !e.is_good()) return declined("validate: " + e.get_message());
  if (auto e = g.build_operation_graph(h); !e.is_good())
    return declined("operation graph: " + e.get_message());
  if (auto e = g.create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK});
      !e.is_good())
    return declined("heuristics: " + e.get_message());
  std::vector<fe::NumericalNote_t> barred{fe::NumericalNote_t::NONDETERMINISTIC};
  if (dt != DT::f32)
    barred.insert(barred.end(), {fe::NumericalNote_t::FFT, fe::NumericalNote_t::WINOGRAD,
                                 fe::NumericalNote_t::WINOGRAD_TILE_4x4,
                                 fe::NumericalNote_t::WINOGRAD_TILE_6x6,
                                 fe::NumericalNote_t::WINOGRAD_TILE_13x13,
                                 fe::NumericalNote_t::REDUCED_PRECISION_REDUCTION});
  else if (!tf32)
    barred.insert(barred.end(),
                  {fe::NumericalNote_t::TENSOR_CORE, fe::NumericalNote_t::DOWN_CONVERT_INPUTS});
  g.deselect_numeric_notes(barred);
  g.deselect_behavior_notes({fe::BehaviorNote_t::RUNTIME_COMPILATION});
  g.deselect_workspace_greater_than(int64_t(workspace_cap));
  if (auto e = g.check_support(h); !e.is_good()) return declined("support: " + e.get_message());

  const cudaStream_t cs = detail::stream_of(st);
  auto vp = pack(*p, a, b, out);
  float best = INFINITY;
  int timed = 0;
  const int64_t count = g.get_execution_plan_count();
  for (int64_t i = 0; i < count && timed < kMaxTimed; ++i) {
    if (!g.build_plan_at_index(i).is_good()) continue;
    int64_t wsb = 0;
    if (!g.get_workspace_size_plan_at_index(i, wsb).is_good() || wsb < 0 ||
        size_t(wsb) > workspace_cap)
      continue;
    detail::Workspace ws(size_t(wsb), st);
    const float ms = detail::time_ms(
        [&] { return g.execute_plan_at_index(h, vp, ws.get(), i).is_good(); }, cs);
    if (!std::isfinite(ms)) continue;
    ++timed;
    if (ms < best) {
      best = ms;
      p->index = i;
      p->workspace = wsb;
    }
  }
  if (p->index < 0) return declined(str_cat("no plan ran (", count, " offered)"));
  if (verbose()) {
    std::string name;
    (void)g.get_plan_name_at_index(p->index, name);
    report(str_cat("plan ", p->index, " of ", count, " (", timed, " timed) ", name, ", ",
                   best * 1e3f, " us, workspace ", p->workspace, " B"));
  }
  return p;
}

}  // namespace

std::shared_ptr<Plan> choose(int op, const kern::ConvShape& s, DT dt, bool tf32,
                             size_t workspace_cap, const void* a, const void* b, void* out,
                             cudnnHandle_t h, Stream st) {
  try {  // the frontend's lower layers may throw: the legacy API runs the shape then
    return choose_plan(op, s, dt, tf32, workspace_cap, a, b, out, h, st);
  } catch (const std::exception& e) {
    if (verbose())
      std::fprintf(stderr, "cudnn graph: %s: the legacy API runs it: %s\n", op_name(op), e.what());
    return nullptr;
  }
}

void run(const Plan& p, const void* a, const void* b, void* out, cudnnHandle_t h, Stream st) {
  detail::Workspace ws(size_t(p.workspace), st);
  auto vp = pack(p, a, b, out);
  auto e = p.graph->execute_plan_at_index(h, vp, ws.get(), p.index);
  if (!e.is_good()) throw Error(str_cat("cuDNN graph API: execution failed: ", e.get_message()));
}

#endif

}  // namespace hr::cuda::cudnn_graph
