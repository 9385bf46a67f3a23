// Static graphs: the data structure and recording.
#include "engine/graph/graph.h"

#include <sstream>

namespace hr::graph {

namespace {

thread_local int g_stream = 0;

struct MarkerOp final : OpDef {
  const char* label;
  explicit MarkerOp(const char* l) : label(l) {}
  const char* name() const override { return label; }
  std::vector<Meta> infer(const std::vector<Meta>&) const override { return {}; }
  void run_cpu(const KernelArgs&) const override {}
  void run_cuda(const KernelArgs&) const override {}
};

}  // namespace

OpPtr marker_op(const char* name) { return std::make_shared<MarkerOp>(name); }

StreamScope::StreamScope(int s) : prev_(g_stream) {
  HR_CHECK(s >= 0, "graph: stream index must be >= 0, got ", s);
  g_stream = s;
}
StreamScope::~StreamScope() { g_stream = prev_; }
int recording_stream() { return g_stream; }

// ---------------------------------------------------------------------------------------------
// GraphIR
// ---------------------------------------------------------------------------------------------
V GraphIR::new_value(const Shape& shape, DType dtype, ValueKind kind) {
  Value v;
  v.shape = shape;
  v.dtype = dtype;
  v.kind = kind;
  values.push_back(std::move(v));
  return static_cast<V>(values.size() - 1);
}

V GraphIR::param(const Tensor& t, const std::string& name) {
  HR_CHECK(t.defined(), "graph param '", name, "': undefined tensor");
  auto it = params.find(t.impl());
  if (it != params.end()) return it->second;
  HR_CHECK(t.device() == opt.device, "graph: tensor ", t.str(), " used by the graph is on ",
           t.device().str(), ", the graph is for ", opt.device.str());
  HR_CHECK(t.is_contiguous(device_format(t.shape(), t.device())), "graph: tensor ", t.str(),
           " is not dense in the device's layout (", opt.device.is_cuda() ? "channels-last" : "contiguous",
           "); pass a dense copy (Tensor::contiguous)");
  const V v = new_value(t.shape(), t.dtype(), ValueKind::Param);
  values[v].tensor = t;
  values[v].name = name;
  params[t.impl()] = v;
  return v;
}

int GraphIR::add_node(OpPtr op, std::vector<V> in, const std::vector<Meta>& out, int stream) {
  Node n;
  n.op = std::move(op);
  n.in = std::move(in);
  n.stream = stream;
  const int id = static_cast<int>(nodes.size());
  for (const Meta& m : out) {
    V v = -1;
    if (m.defined) {
      v = new_value(m.shape, m.dtype);
      values[v].producer = id;
    }
    n.out.push_back(v);
  }
  nodes.push_back(std::move(n));
  return id;
}

Tensor GraphIR::symbolic(V v) {
  HR_CHECK(v >= 0 && v < static_cast<V>(values.size()), "graph: %", v, " is not a value");
  const Value& x = values[v];
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = x.shape;
  impl->strides = make_strides(x.shape, device_format(x.shape, opt.device));
  impl->dtype = x.dtype;
  impl->sym_device = opt.device;
  impl->value = v;
  // the shared pointer of the graph: Graph::shared() or a symbolic tensor already made
  impl->graph = self.lock();
  return Tensor(impl);
}

V GraphIR::value_of(const Tensor& t) const {
  if (!t.defined()) return -1;
  HR_CHECK(t.is_symbolic() && t.impl()->graph.get() == this, "graph: tensor ", t.str(),
           " is not a value of this graph");
  return t.impl()->value;
}

void GraphIR::index_producers() {
  for (Value& v : values) v.producer = -1;
  for (size_t i = 0; i < nodes.size(); ++i)
    for (V o : nodes[i].out)
      if (o >= 0) values[o].producer = static_cast<int>(i);
}

std::string GraphIR::str() const {
  std::ostringstream os;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    os << "#" << i << " ";
    bool first = true;
    for (V o : n.out) {
      if (o < 0) continue;
      os << (first ? "" : ", ") << "%" << o;
      first = false;
    }
    os << " = " << n.op->name() << "(";
    for (size_t k = 0; k < n.in.size(); ++k)
      os << (k ? ", " : "") << (n.in[k] < 0 ? "-" : "%" + std::to_string(n.in[k]));
    os << ")";
    const std::string attrs = n.op->attributes();
    if (!attrs.empty()) os << " {" << attrs << "}";
    os << " [stream " << n.stream << "]";
    for (V o : n.out)
      if (o >= 0) {
        os << " " << dtype_name(values[o].dtype) << shape_str(values[o].shape);
        break;
      }
    os << "\n";
  }
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// Graph
// ---------------------------------------------------------------------------------------------
Graph::Graph(GraphOptions opt) : ir_(std::make_shared<GraphIR>()) {
  ir_->opt = opt;
  ir_->self = ir_;
  ir_->add_node(marker_op("start"), {}, {}, 0);
}

Tensor Graph::input(const std::string& name, const Shape& shape, DType dtype) {
  GraphIR& g = *ir_;
  HR_CHECK(!g.sealed, "graph input '", name, "': the graph is already compiled");
  HR_CHECK(!name.empty() && !g.inputs.count(name), "graph input: the name '", name,
           "' is empty or already used");
  for (int64_t d : shape)
    HR_CHECK(d > 0, "graph input '", name, "': bad shape ", shape_str(shape));
  const V v = g.new_value(shape, dtype, ValueKind::Input);
  g.values[v].name = name;
  g.values[v].producer = 0;
  g.nodes[0].out.push_back(v);
  g.inputs[name] = v;
  return g.symbolic(v);
}

void Graph::output(const Tensor& t, const std::string& name) {
  GraphIR& g = *ir_;
  HR_CHECK(!g.sealed, "graph output '", name, "': the graph is already compiled");
  HR_CHECK(t.defined(), "graph output '", name, "': undefined tensor");
  const V v = g.value_of(t);
  HR_CHECK(!name.empty() && !g.outputs.count(name), "graph output: the name '", name,
           "' is empty or already used");
  HR_CHECK(g.values[v].kind == ValueKind::Activation || g.values[v].kind == ValueKind::Input,
           "graph output '", name, "': only computed values and inputs can be outputs");
  g.outputs[name] = v;
}

const Value& Graph::value(const Tensor& t) const {
  const V v = ir_->value_of(t);
  HR_CHECK(v >= 0, "graph: undefined tensor");
  return ir_->values[v];
}

// ---------------------------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------------------------
GraphIR* recording_graph(const std::vector<Tensor>& inputs, const char* op) {
  GraphIR* g = nullptr;
  for (const Tensor& t : inputs) {
    if (!t.is_symbolic()) continue;
    GraphIR* tg = t.impl()->graph.get();
    HR_CHECK(!g || g == tg, op, ": inputs belong to two different graphs");
    g = tg;
  }
  if (g) HR_CHECK(!g->sealed, op, ": the graph is already compiled; record a new one");
  return g;
}

std::vector<Tensor> record(GraphIR& g, const OpPtr& op, const std::vector<Tensor>& inputs,
                           const std::vector<Meta>& out) {
  std::vector<V> in(inputs.size(), -1);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined()) continue;
    in[i] = t.is_symbolic() ? g.value_of(t) : g.param(t);
    HR_CHECK(!op->writes_input(i) || g.values[in[i]].kind == ValueKind::Param, op->name(),
             ": operand ", i, " is updated in place, so it must be a tensor owned outside the "
             "graph (a module buffer), not a value the graph computes");
  }
  const int id = g.add_node(op, std::move(in), out, recording_stream());
  std::vector<Tensor> r;
  for (V v : g.nodes[id].out) r.push_back(v >= 0 ? g.symbolic(v) : Tensor());
  return r;
}

}  // namespace hr::graph
