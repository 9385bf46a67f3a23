// Static graphs: the builder. Compilation and execution are in graph_exec.cpp.
#include "engine/graph.h"

#include <cmath>
#include <sstream>
#include <typeinfo>

#include "engine/nn.h"

namespace hr::graph {

const char* op_name(Op op) {
  switch (op) {
    case Op::Start: return "start";
    case Op::End: return "end";
    case Op::Conv2d: return "conv2d";
    case Op::BatchNorm: return "batch_norm";
    case Op::BatchNormAct: return "batch_norm_act";
    case Op::Relu: return "relu";
    case Op::Add: return "add";
    case Op::UpsampleNearest: return "upsample_nearest";
    case Op::UpsampleBilinear: return "upsample_bilinear";
    case Op::Concat: return "concat";
    case Op::AvgPool: return "avg_pool2d";
    case Op::GlobalAvgPool: return "global_avg_pool";
    case Op::Linear: return "linear";
    case Op::Cast: return "cast";
    case Op::HeatmapLoss: return "heatmap_loss";
    case Op::CrossEntropy: return "cross_entropy";
    case Op::ConvBwdData: return "conv2d_bwd_data";
    case Op::ConvBwdWeight: return "conv2d_bwd_weight";
    case Op::BatchNormBwd: return "batch_norm_bwd";
    case Op::BatchNormActBwd: return "batch_norm_act_bwd";
    case Op::ReluBwd: return "relu_bwd";
    case Op::UpsampleNearestBwd: return "upsample_nearest_bwd";
    case Op::UpsampleBilinearBwd: return "upsample_bilinear_bwd";
    case Op::ConcatBwd: return "concat_bwd";
    case Op::AvgPoolBwd: return "avg_pool2d_bwd";
    case Op::GlobalAvgPoolBwd: return "global_avg_pool_bwd";
    case Op::LinearBwd: return "linear_bwd";
    case Op::CastBwd: return "cast_bwd";
    case Op::HeatmapLossBwd: return "heatmap_loss_bwd";
    case Op::CrossEntropyBwd: return "cross_entropy_bwd";
    case Op::Sum: return "sum";
  }
  return "?";
}

Graph::Graph(GraphOptions opt) : opt_(opt) {
  HR_CHECK(opt_.compute_dtype == DType::f32 || opt_.compute_dtype == DType::f16 ||
               opt_.compute_dtype == DType::bf16,
           "graph: compute dtype must be f32, f16 or bf16, got ", dtype_name(opt_.compute_dtype));
  Node start;
  start.op = Op::Start;
  nodes_.push_back(start);
}

V Graph::new_value(const Shape& shape, DType dtype, ValueKind kind) {
  Value v;
  v.shape = shape;
  v.dtype = dtype;
  v.kind = kind;
  values_.push_back(std::move(v));
  return static_cast<V>(values_.size() - 1);
}

int Graph::add_node(Node n) {
  n.stream = stream_;
  const int id = static_cast<int>(nodes_.size());
  for (V o : n.out)
    if (o >= 0) values_[o].producer = id;
  nodes_.push_back(std::move(n));
  return id;
}

void Graph::check(V v, const char* op, const char* what) const {
  HR_CHECK(v >= 0 && v < static_cast<V>(values_.size()), "graph ", op, ": ", what, " (%", v,
           ") is not a value of this graph");
}

const Value& Graph::value(V v) const {
  check(v, "value", "the value");
  return values_[v];
}

void Graph::set_stream(int s) {
  HR_CHECK(s >= 0, "graph: stream index must be >= 0, got ", s);
  stream_ = s;
}

V Graph::input(const std::string& name, const Shape& shape, DType dtype) {
  HR_CHECK(!name.empty() && !inputs_.count(name), "graph input: the name '", name,
           "' is empty or already used");
  for (int64_t d : shape) HR_CHECK(d > 0, "graph input '", name, "': bad shape ", shape_str(shape));
  V v = new_value(shape, dtype, ValueKind::Input);
  values_[v].name = name;
  values_[v].producer = 0;
  nodes_[0].out.push_back(v);
  inputs_[name] = v;
  return v;
}

V Graph::param(const Tensor& t, const std::string& name) {
  HR_CHECK(t.defined(), "graph param '", name, "': undefined tensor");
  HR_CHECK(t.device() == opt_.device, "graph param '", name, "': tensor on ", t.device().str(),
           ", the graph is for ", opt_.device.str());
  auto it = params_.find(t.impl());
  if (it != params_.end()) return it->second;
  V v = new_value(t.shape(), t.dtype(), ValueKind::Param);
  values_[v].tensor = t;
  values_[v].name = name;
  params_[t.impl()] = v;
  return v;
}

void Graph::output(V v, const std::string& name) {
  check(v, "output", "the value");
  HR_CHECK(!name.empty() && !outputs_.count(name), "graph output: the name '", name,
           "' is empty or already used");
  HR_CHECK(values_[v].kind == ValueKind::Activation || values_[v].kind == ValueKind::Input,
           "graph output '", name, "': only computed values can be outputs");
  outputs_[name] = v;
}

V Graph::autocast(V v) {
  const Value& x = values_[v];
  if (!opt_.device.is_cuda() || opt_.compute_dtype == DType::f32 || !is_floating(x.dtype) ||
      x.dtype == opt_.compute_dtype)
    return v;
  return cast(v, opt_.compute_dtype);
}

namespace {
bool is_float_for(const Value& v, Device d) {
  return d.is_cuda() ? is_floating(v.dtype) : v.dtype == DType::f32;
}
}  // namespace

V Graph::conv2d(V x, V w, V bias, std::array<int64_t, 2> stride, std::array<int64_t, 2> padding) {
  check(x, "conv2d", "input");
  check(w, "conv2d", "weight");
  x = autocast(x);
  w = autocast(w);
  const Shape xs = values_[x].shape, ws = values_[w].shape;
  HR_CHECK(xs.size() == 4 && ws.size() == 4, "graph conv2d: expected input [N,C,H,W] and weight "
           "[K,C,R,S], got ", shape_str(xs), " and ", shape_str(ws));
  HR_CHECK(xs[1] == ws[1], "graph conv2d: input ", shape_str(xs), " has ", xs[1],
           " channels but weight ", shape_str(ws), " expects ", ws[1]);
  HR_CHECK(values_[x].dtype == values_[w].dtype && is_float_for(values_[x], opt_.device),
           "graph conv2d: input and weight dtypes ", dtype_name(values_[x].dtype), " and ",
           dtype_name(values_[w].dtype), " do not fit the ", opt_.device.str(), " kernels");
  HR_CHECK(stride[0] > 0 && stride[1] > 0 && padding[0] >= 0 && padding[1] >= 0,
           "graph conv2d: bad stride/padding");
  if (bias >= 0) {
    check(bias, "conv2d", "bias");
    HR_CHECK(values_[bias].shape == Shape{ws[0]} && values_[bias].dtype == DType::f32,
             "graph conv2d: bias ", shape_str(values_[bias].shape), " must be f32 [", ws[0], "]");
  }
  const int64_t P = (xs[2] + 2 * padding[0] - ws[2]) / stride[0] + 1;
  const int64_t Q = (xs[3] + 2 * padding[1] - ws[3]) / stride[1] + 1;
  HR_CHECK(xs[2] + 2 * padding[0] >= ws[2] && xs[3] + 2 * padding[1] >= ws[3] && P > 0 && Q > 0,
           "graph conv2d: input ", shape_str(xs), " is smaller than kernel ", shape_str(ws));
  Node n;
  n.op = Op::Conv2d;
  n.stride = stride;
  n.padding = padding;
  n.in = {x, w, bias};
  n.out = {new_value({xs[0], ws[0], P, Q}, values_[x].dtype)};
  add_node(n);
  return n.out[0];
}

V Graph::batch_norm(V x, V gamma, V beta, V running_mean, V running_var, bool training,
                    float momentum, float eps, Tensor num_batches_tracked) {
  check(x, "batch_norm", "input");
  const Shape xs = values_[x].shape;
  HR_CHECK(xs.size() == 4 || xs.size() == 2, "graph batch_norm: expected [N,C,H,W] or [N,C], got ",
           shape_str(xs));
  HR_CHECK(is_float_for(values_[x], opt_.device), "graph batch_norm: input dtype ",
           dtype_name(values_[x].dtype), " does not fit the ", opt_.device.str(), " kernels");
  const int64_t C = xs[1];
  const char* names[4] = {"weight", "bias", "running_mean", "running_var"};
  V ps[4] = {gamma, beta, running_mean, running_var};
  for (int i = 0; i < 4; ++i) {
    check(ps[i], "batch_norm", names[i]);
    HR_CHECK(values_[ps[i]].shape == Shape{C} && values_[ps[i]].dtype == DType::f32,
             "graph batch_norm: ", names[i], " has shape ", shape_str(values_[ps[i]].shape),
             ", expected f32 [", C, "]");
  }
  HR_CHECK(values_[running_mean].kind == ValueKind::Param &&
               values_[running_var].kind == ValueKind::Param,
           "graph batch_norm: running statistics must be parameters (tensors owned outside)");
  int64_t per_channel = xs[0];
  for (size_t d = 2; d < xs.size(); ++d) per_channel *= xs[d];
  HR_CHECK(!training || per_channel > 1, "graph batch_norm: training needs more than one value "
           "per channel, got input ", shape_str(xs));
  Node n;
  n.op = Op::BatchNorm;
  n.training = training;
  n.momentum = momentum;
  n.eps = eps;
  if (training) n.num_batches_tracked = num_batches_tracked;
  n.in = {x, gamma, beta, running_mean, running_var};
  n.out = {new_value(xs, values_[x].dtype)};
  if (training) {
    n.out.push_back(new_value({C}, DType::f32));
    n.out.push_back(new_value({C}, DType::f32));
  }
  add_node(n);
  return n.out[0];
}

V Graph::relu(V x) {
  check(x, "relu", "input");
  HR_CHECK(is_float_for(values_[x], opt_.device), "graph relu: bad dtype ",
           dtype_name(values_[x].dtype));
  Node n;
  n.op = Op::Relu;
  n.in = {x};
  n.out = {new_value(values_[x].shape, values_[x].dtype)};
  add_node(n);
  return n.out[0];
}

V Graph::add(V a, V b) {
  check(a, "add", "first operand");
  check(b, "add", "second operand");
  HR_CHECK(values_[a].shape == values_[b].shape && values_[a].dtype == values_[b].dtype,
           "graph add: operands ", dtype_name(values_[a].dtype), shape_str(values_[a].shape),
           " and ", dtype_name(values_[b].dtype), shape_str(values_[b].shape), " differ");
  HR_CHECK(is_float_for(values_[a], opt_.device), "graph add: bad dtype ",
           dtype_name(values_[a].dtype));
  Node n;
  n.op = Op::Add;
  n.in = {a, b};
  n.out = {new_value(values_[a].shape, values_[a].dtype)};
  add_node(n);
  return n.out[0];
}

V Graph::upsample_nearest(V x, double scale) {
  check(x, "upsample_nearest", "input");
  const Shape xs = values_[x].shape;
  HR_CHECK(xs.size() == 4 && scale > 0, "graph upsample_nearest: needs a 4-D input and a positive "
           "scale, got ", shape_str(xs), " and ", scale);
  const int64_t oh = static_cast<int64_t>(std::floor(xs[2] * scale));
  const int64_t ow = static_cast<int64_t>(std::floor(xs[3] * scale));
  HR_CHECK(oh > 0 && ow > 0, "graph upsample_nearest: empty output for ", shape_str(xs));
  Node n;
  n.op = Op::UpsampleNearest;
  n.scale = scale;
  n.in = {x};
  n.out = {new_value({xs[0], xs[1], oh, ow}, values_[x].dtype)};
  add_node(n);
  return n.out[0];
}

V Graph::upsample_bilinear(V x, int64_t out_h, int64_t out_w, bool align_corners) {
  check(x, "upsample_bilinear", "input");
  const Shape xs = values_[x].shape;
  HR_CHECK(xs.size() == 4 && out_h > 0 && out_w > 0, "graph upsample_bilinear: needs a 4-D input "
           "and a positive size, got ", shape_str(xs), " -> ", out_h, "x", out_w);
  Node n;
  n.op = Op::UpsampleBilinear;
  n.align_corners = align_corners;
  n.in = {x};
  n.out = {new_value({xs[0], xs[1], out_h, out_w}, values_[x].dtype)};
  add_node(n);
  return n.out[0];
}

V Graph::concat(const std::vector<V>& xs) {
  HR_CHECK(!xs.empty(), "graph concat: no inputs");
  for (V x : xs) check(x, "concat", "an input");
  Shape s = values_[xs[0]].shape;
  HR_CHECK(s.size() >= 2, "graph concat: inputs need a channel dimension");
  s[1] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Value& v = values_[xs[i]];
    bool ok = v.shape.size() == s.size() && v.dtype == values_[xs[0]].dtype;
    for (size_t d = 0; ok && d < s.size(); ++d) ok = d == 1 || v.shape[d] == values_[xs[0]].shape[d];
    HR_CHECK(ok, "graph concat: input ", i, " ", shape_str(v.shape), " does not fit input 0 ",
             shape_str(values_[xs[0]].shape));
    s[1] += v.shape[1];
  }
  Node n;
  n.op = Op::Concat;
  n.in = xs;
  n.out = {new_value(s, values_[xs[0]].dtype)};
  add_node(n);
  return n.out[0];
}

V Graph::avg_pool2d(V x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                    std::array<int64_t, 2> padding, bool count_include_pad) {
  check(x, "avg_pool2d", "input");
  const Shape xs = values_[x].shape;
  HR_CHECK(xs.size() == 4 && kernel[0] > 0 && kernel[1] > 0 && stride[0] > 0 && stride[1] > 0 &&
               2 * padding[0] <= kernel[0] && 2 * padding[1] <= kernel[1],
           "graph avg_pool2d: bad input ", shape_str(xs), " or window");
  const int64_t oh = (xs[2] + 2 * padding[0] - kernel[0]) / stride[0] + 1;
  const int64_t ow = (xs[3] + 2 * padding[1] - kernel[1]) / stride[1] + 1;
  HR_CHECK(xs[2] + 2 * padding[0] >= kernel[0] && xs[3] + 2 * padding[1] >= kernel[1],
           "graph avg_pool2d: input ", shape_str(xs), " is smaller than the kernel ", kernel[0],
           "x", kernel[1]);
  Node n;
  n.op = Op::AvgPool;
  n.kernel = kernel;
  n.stride = stride;
  n.padding = padding;
  n.count_include_pad = count_include_pad;
  n.in = {x};
  n.out = {new_value({xs[0], xs[1], oh, ow}, values_[x].dtype)};
  add_node(n);
  return n.out[0];
}

V Graph::global_avg_pool(V x) {
  check(x, "global_avg_pool", "input");
  const Shape xs = values_[x].shape;
  HR_CHECK(xs.size() == 4, "graph global_avg_pool: expected a 4-D input, got ", shape_str(xs));
  Node n;
  n.op = Op::GlobalAvgPool;
  n.in = {x};
  n.out = {new_value({xs[0], xs[1]}, values_[x].dtype)};
  add_node(n);
  return n.out[0];
}

V Graph::linear(V x, V w, V bias) {
  check(x, "linear", "input");
  check(w, "linear", "weight");
  x = autocast(x);
  w = autocast(w);
  const Shape xs = values_[x].shape, ws = values_[w].shape;
  HR_CHECK(xs.size() == 2 && ws.size() == 2 && xs[1] == ws[1], "graph linear: input ",
           shape_str(xs), " does not fit weight ", shape_str(ws), " (expected [M,I] and [O,I])");
  HR_CHECK(values_[x].dtype == values_[w].dtype, "graph linear: input and weight dtypes differ");
  if (bias >= 0) {
    check(bias, "linear", "bias");
    HR_CHECK(values_[bias].shape == Shape{ws[0]} && values_[bias].dtype == DType::f32,
             "graph linear: bias ", shape_str(values_[bias].shape), " must be f32 [", ws[0], "]");
  }
  Node n;
  n.op = Op::Linear;
  n.in = {x, w, bias};
  n.out = {new_value({xs[0], ws[0]}, values_[x].dtype)};
  add_node(n);
  return n.out[0];
}

V Graph::cast(V x, DType dtype) {
  check(x, "cast", "input");
  HR_CHECK(is_floating(values_[x].dtype) && is_floating(dtype), "graph cast: ",
           dtype_name(values_[x].dtype), " -> ", dtype_name(dtype), " is not a float cast");
  if (values_[x].dtype == dtype) return x;
  HR_CHECK(opt_.device.is_cuda() || dtype == DType::f32,
           "graph cast: the CPU computes in f32 only");
  Node n;
  n.op = Op::Cast;
  n.in = {x};
  n.out = {new_value(values_[x].shape, dtype)};
  add_node(n);
  return n.out[0];
}

V Graph::heatmap_loss(V pred, V target, V weight) {
  check(pred, "heatmap_loss", "prediction");
  check(target, "heatmap_loss", "target");
  check(weight, "heatmap_loss", "target weight");
  const Shape ps = values_[pred].shape;
  HR_CHECK(ps.size() == 4, "graph heatmap_loss: expected prediction [N,J,H,W], got ",
           shape_str(ps));
  HR_CHECK(values_[target].shape == ps, "graph heatmap_loss: target ",
           shape_str(values_[target].shape), " does not match prediction ", shape_str(ps));
  const Shape& wsh = values_[weight].shape;
  HR_CHECK(shape_numel(wsh) == ps[0] * ps[1] && wsh.size() >= 2 && wsh[0] == ps[0] &&
               wsh[1] == ps[1] && values_[weight].dtype == DType::f32,
           "graph heatmap_loss: target weight ", shape_str(wsh), " does not fit f32 [", ps[0],
           ", ", ps[1], "]");
  if (values_[target].dtype != values_[pred].dtype) target = cast(target, values_[pred].dtype);
  Node n;
  n.op = Op::HeatmapLoss;
  n.in = {pred, target, weight};
  n.out = {new_value({}, DType::f32)};
  add_node(n);
  return n.out[0];
}

V Graph::cross_entropy(V logits, V labels, int64_t ignore_index) {
  check(logits, "cross_entropy", "logits");
  check(labels, "cross_entropy", "labels");
  const Shape ls = values_[logits].shape;
  HR_CHECK(ls.size() == 4 || ls.size() == 2, "graph cross_entropy: expected logits [N,C,H,W] or "
           "[N,C], got ", shape_str(ls));
  const Shape want = ls.size() == 4 ? Shape{ls[0], ls[2], ls[3]} : Shape{ls[0]};
  HR_CHECK(values_[labels].shape == want && values_[labels].dtype == DType::i64,
           "graph cross_entropy: labels ", dtype_name(values_[labels].dtype),
           shape_str(values_[labels].shape), " do not fit logits ", shape_str(ls), " (expected i64",
           shape_str(want), ")");
  Node n;
  n.op = Op::CrossEntropy;
  n.ignore_index = ignore_index;
  n.in = {logits, labels};
  n.out = {new_value({}, DType::f32)};
  add_node(n);
  return n.out[0];
}

V Graph::conv2d(const hr::Conv2d& m, V x) {
  return conv2d(x, param(m.weight), m.bias.defined() ? param(m.bias) : -1, m.stride, m.padding);
}

V Graph::batch_norm(hr::BatchNorm2d& m, V x) {
  const bool training = m.is_training();
  return batch_norm(x, param(m.weight), param(m.bias), param(m.running_mean),
                    param(m.running_var), training, m.momentum, m.eps,
                    training ? m.num_batches_tracked : Tensor());
}

V Graph::linear(const hr::Linear& m, V x) {
  return linear(x, param(m.weight), m.bias.defined() ? param(m.bias) : -1);
}

V Graph::module(hr::Module& m, V x) {
  if (auto* c = dynamic_cast<hr::Conv2d*>(&m)) return conv2d(*c, x);
  if (auto* b = dynamic_cast<hr::BatchNorm2d*>(&m)) return batch_norm(*b, x);
  if (auto* l = dynamic_cast<hr::Linear*>(&m)) return linear(*l, x);
  if (dynamic_cast<hr::ReLU*>(&m)) return relu(x);
  if (dynamic_cast<hr::Sequential*>(&m)) {
    for (const auto& [name, child] : m.children()) x = module(*child, x);
    return x;
  }
  throw Error(str_cat("graph module: cannot record a module of type ", typeid(m).name(),
                      " (only Conv2d, BatchNorm2d, ReLU, Linear and Sequential); add its ops "
                      "one by one"));
}

std::string Graph::str() const {
  std::ostringstream os;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    os << "#" << i << " ";
    for (size_t k = 0; k < n.out.size(); ++k) {
      if (n.out[k] < 0) continue;
      os << (k ? ", " : "") << "%" << n.out[k];
    }
    os << " = " << op_name(n.op) << "(";
    for (size_t k = 0; k < n.in.size(); ++k) os << (k ? ", " : "") << (n.in[k] < 0 ? "-" : "%" + std::to_string(n.in[k]));
    os << ") [stream " << n.stream << "]";
    if (!n.out.empty() && n.out[0] >= 0)
      os << " " << dtype_name(values_[n.out[0]].dtype) << shape_str(values_[n.out[0]].shape);
    os << "\n";
  }
  return os.str();
}

}  // namespace hr::graph
