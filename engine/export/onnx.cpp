// ONNX export of a recorded inference graph: the protobuf OnnxEmitter and the graph walker.
#include "engine/export/onnx.h"

#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <set>

#include "engine/autograd.h"
#include "engine/file_util.h"
#include "engine/graph/passes.h"

namespace hr {

std::string OnnxValueInfo::str() const {
  std::string s = name + " " + (is_bool ? "bool" : dtype_name(dtype)) + "[";
  for (size_t k = 0; k < dims.size(); ++k)
    s += (k ? ", " : "") + (dims[k] < 0 ? dim_params[k] : std::to_string(dims[k]));
  return s + "]";
}

struct OnnxModel::Impl {
  ::onnx::ModelProto model;
  OnnxStats stats;
};

OnnxModel::OnnxModel() : impl_(std::make_unique<Impl>()) {}
OnnxModel::~OnnxModel() = default;
OnnxModel::OnnxModel(OnnxModel&&) noexcept = default;
OnnxModel& OnnxModel::operator=(OnnxModel&&) noexcept = default;
const OnnxStats& OnnxModel::stats() const { return impl_->stats; }

std::string OnnxModel::serialize() const {
  std::string bytes;
  HR_CHECK(impl_->model.SerializeToString(&bytes),
           "ONNX export: the model cannot be serialized (protobuf's limit is 2 GiB)");
  return bytes;
}

int64_t OnnxModel::save(const std::string& path) const {
  const std::string bytes = serialize();
  write_file_atomic(path, bytes.data(), bytes.size(), "cannot write " + path);
  return static_cast<int64_t>(bytes.size());
}

namespace {

// t (any device, layout, float or i64 dtype) as a TensorProto in logical row-major order
void fill_tensor(::onnx::TensorProto* p, const std::string& name, const Tensor& t) {
  Tensor h = t;
  if (!t.device().is_cpu() || !t.is_contiguous()) {
    h = Tensor::empty(t.shape(), t.dtype());
    h.copy_(t);
  }
  p->set_name(name);
  p->set_data_type(onnx_elem_type(t.dtype()));
  for (int64_t d : t.shape()) p->add_dims(d);
  p->set_raw_data(h.raw_data(), h.nbytes());  // little-endian, as the host's
}

void set_info(::onnx::ValueInfoProto* v, const OnnxValueInfo& i) {
  v->set_name(i.name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(i.is_bool ? kOnnxBool : onnx_elem_type(i.dtype));
  auto* shape = tt->mutable_shape();
  for (size_t k = 0; k < i.dims.size(); ++k) {
    auto* d = shape->add_dim();
    if (i.dims[k] < 0)
      d->set_dim_param(i.dim_params.at(k));
    else
      d->set_dim_value(i.dims[k]);
  }
}

// Unique value names across the model.
class Names {
 public:
  // `want`, or want.1, want.2 ... when taken
  std::string claim(const std::string& want) {
    std::string n = want;
    for (int k = 1; taken_.count(n); ++k) n = want + "." + std::to_string(k);
    taken_.insert(n);
    return n;
  }
  std::string fresh(const std::string& hint) {
    std::string n;
    do n = hint + "_" + std::to_string(next_++);
    while (taken_.count(n));
    taken_.insert(n);
    return n;
  }

 private:
  std::set<std::string> taken_;
  int64_t next_ = 0;
};

class ProtoEmitter final : public OnnxEmitter {
 public:
  ProtoEmitter(::onnx::GraphProto& g, Names& names, int64_t opset)
      : g_(g), names_(names), opset_(opset) {}

  void node(const std::string& type, const std::vector<std::string>& inputs,
            const std::vector<std::string>& outputs, const std::vector<OnnxAttr>& attrs) override {
    auto* n = g_.add_node();
    n->set_op_type(type);
    n->set_name(str_cat(type, "_", g_.node_size() - 1));
    for (const auto& i : inputs) n->add_input(i);
    for (const auto& o : outputs) n->add_output(o);
    for (const OnnxAttr& a : attrs) {
      auto* p = n->add_attribute();
      p->set_name(a.name);
      switch (a.kind) {
        case OnnxAttr::Kind::Int:
          p->set_type(::onnx::AttributeProto::INT);
          p->set_i(a.i);
          break;
        case OnnxAttr::Kind::Float:
          p->set_type(::onnx::AttributeProto::FLOAT);
          p->set_f(a.f);
          break;
        case OnnxAttr::Kind::String:
          p->set_type(::onnx::AttributeProto::STRING);
          p->set_s(a.s);
          break;
        case OnnxAttr::Kind::Ints:
          p->set_type(::onnx::AttributeProto::INTS);
          for (int64_t v : a.ints) p->add_ints(v);
          break;
        case OnnxAttr::Kind::Floats:
          p->set_type(::onnx::AttributeProto::FLOATS);
          for (float v : a.floats) p->add_floats(v);
          break;
      }
    }
  }
  std::string fresh(const std::string& hint) override { return names_.fresh(hint); }
  std::string claim(const std::string& want) override { return names_.claim(want); }
  std::string constant(const Tensor& t, const std::string& hint) override {
    const std::string n = names_.fresh("onnx::" + hint);
    fill_tensor(g_.add_initializer(), n, t);
    return n;
  }
  int64_t opset() const override { return opset_; }

 private:
  ::onnx::GraphProto& g_;
  Names& names_;
  int64_t opset_;
};

// Drops the nodes no model output depends on, then the initializers no node reads.
void prune(::onnx::GraphProto& g) {
  std::set<std::string> needed;
  for (const auto& o : g.output()) needed.insert(o.name());
  std::vector<char> keep(static_cast<size_t>(g.node_size()), 0);
  for (int i = g.node_size() - 1; i >= 0; --i) {
    const auto& n = g.node(i);
    for (const auto& o : n.output()) keep[i] = keep[i] || (!o.empty() && needed.count(o));
    if (keep[i])
      for (const auto& in : n.input()) needed.insert(in);
  }
  ::onnx::GraphProto pruned;
  for (int i = 0; i < g.node_size(); ++i)
    if (keep[i]) *pruned.add_node() = std::move(*g.mutable_node(i));
  g.mutable_node()->Swap(pruned.mutable_node());
  auto* inits = g.mutable_initializer();
  for (int i = inits->size() - 1; i >= 0; --i)
    if (!needed.count(inits->Get(i).name())) inits->DeleteSubrange(i, 1);
}

}  // namespace

OnnxModel export_onnx_graph(graph::Graph& graph, const OnnxGraphOptions& o) {
  using graph::V;
  using graph::ValueKind;
  HR_CHECK(o.opset == 17, "ONNX export: opset ", o.opset, " is not supported (opset 17 is)");
  graph::GraphIR& g = graph.ir();
  HR_CHECK(!g.sealed, "ONNX export: the graph is already compiled; record a new one");
  HR_CHECK(!g.inputs.empty() && !g.outputs.empty(), "ONNX export: the graph has no ",
           g.inputs.empty() ? "input" : "output");
  std::vector<std::string> out_names = o.outputs;
  if (out_names.empty())
    for (const auto& [name, v] : g.outputs) out_names.push_back(name);
  for (const auto& n : out_names)
    HR_CHECK(g.outputs.count(n), "ONNX export: the graph has no output named '", n, "'");
  OnnxModel result;
  OnnxStats& stats = result.impl_->stats;
  // batch norm folded into the convolutions (not fused with add / ReLU first: fold_batch_norm
  // takes plain batch norms only), the nodes no output needs removed
  stats.folded = graph::fold_batch_norm(g);
  graph::remove_dead_nodes(g);
  g.sealed = true;  // consumed: rewritten by the passes above
  const std::vector<char> prologue = graph::find_prologue(g);
  const size_t nv = g.values.size();

  // the parameter-only nodes (folded weights) computed now, once
  std::vector<Tensor> value(nv);
  for (size_t v = 0; v < nv; ++v)
    if (g.values[v].kind == ValueKind::Param || g.values[v].kind == ValueKind::Constant)
      value[v] = g.values[v].tensor;
  {
    NoGradGuard no_grad;
    for (size_t i = 1; i < g.nodes.size(); ++i) {
      if (!prologue[i]) continue;
      const graph::Node& n = g.nodes[i];
      std::vector<Tensor> in;
      for (V v : n.in) in.push_back(v >= 0 ? value[v] : Tensor());
      const std::vector<Tensor> out = hr::apply(n.op, in);
      for (size_t k = 0; k < n.out.size(); ++k)
        if (n.out[k] >= 0) value[n.out[k]] = out[k];
    }
  }

  // what the emitted nodes read and how often every value is used
  std::vector<int> uses(nv, 0);
  std::vector<char> read_by_model(nv, 0);
  for (size_t i = 1; i < g.nodes.size(); ++i)
    for (V v : g.nodes[i].in)
      if (v >= 0) {
        ++uses[v];
        if (!prologue[i]) read_by_model[v] = 1;
      }
  std::vector<char> is_output(nv, 0);
  for (const auto& [name, v] : g.outputs) is_output[v] = 1;

  // names: inputs, outputs, then the constants the model reads (parameters by their keys), then
  // every other value by its op
  Names names;
  std::vector<std::string> name(nv);
  for (const auto& [n, v] : g.inputs) name[v] = names.claim(n);
  for (const auto& n : out_names) {
    const V v = g.outputs.at(n);
    if (name[v].empty()) name[v] = names.claim(n);
  }
  std::vector<std::string> label(nv);  // constants: what they are called before claiming
  for (size_t v = 0; v < nv; ++v) {
    if (g.values[v].kind == ValueKind::Param) {
      auto it = o.names.find(g.values[v].tensor.impl());
      label[v] = it != o.names.end() ? it->second : str_cat("param.", v);
    } else if (g.values[v].kind == ValueKind::Constant) {
      label[v] = str_cat("const.", v);
    }
  }
  for (size_t i = 1; i < g.nodes.size(); ++i) {
    if (!prologue[i]) continue;
    const graph::Node& n = g.nodes[i];
    const std::string base = n.in[0] >= 0 ? label[n.in[0]] : str_cat("const.", i);
    const bool fold = std::string(n.op->name()) == "fold_batch_norm";
    for (size_t k = 0; k < n.out.size(); ++k) {
      if (n.out[k] < 0) continue;
      std::string l = str_cat(base, ".", n.op->name(), k ? str_cat(k) : "");
      // a folded convolution keeps its weight's name; its bias is the module's "bias"
      if (fold && k == 0) l = base;
      if (fold && k == 1) {
        const std::string w = ".weight";
        l = base.size() > w.size() && base.compare(base.size() - w.size(), w.size(), w) == 0
                ? base.substr(0, base.size() - w.size()) + ".bias"
                : base + ".bias";
      }
      label[n.out[k]] = l;
    }
  }
  for (size_t v = 0; v < nv; ++v)
    if (read_by_model[v] && value[v].defined() && name[v].empty()) name[v] = names.claim(label[v]);

  ::onnx::ModelProto& model = result.impl_->model;
  ::onnx::GraphProto& gp = *model.mutable_graph();
  gp.set_name(o.graph_name);
  ProtoEmitter em(gp, names, o.opset);
  for (size_t v = 0; v < nv; ++v)
    if (read_by_model[v] && value[v].defined())
      fill_tensor(gp.add_initializer(), name[v], value[v]);

  // every other node through its op's translation; dim 0 is the batch where an input reaches
  std::vector<char> batched(nv, 0);
  for (const auto& [n, v] : g.inputs) batched[v] = 1;
  for (size_t i = 1; i < g.nodes.size(); ++i) {
    if (prologue[i]) continue;
    const graph::Node& n = g.nodes[i];
    std::vector<std::string> in, out;
    std::vector<Meta> in_meta, out_meta;
    bool b = false;
    for (V v : n.in) {
      in.push_back(v >= 0 ? name[v] : "");
      in_meta.push_back(v >= 0 ? g.values[v].meta(g.opt.device) : Meta::none());
      b = b || (v >= 0 && batched[v]);
    }
    for (V v : n.out) {
      const bool used = v >= 0 && (uses[v] > 0 || is_output[v]);
      if (used && name[v].empty()) name[v] = names.claim(str_cat(n.op->name(), "_", v));
      out.push_back(used ? name[v] : "");
      out_meta.push_back(v >= 0 ? g.values[v].meta(g.opt.device) : Meta::none());
      if (v >= 0) batched[v] = b;
    }
    n.op->to_onnx(em, OnnxNode{in, in_meta, out, out_meta, b});
  }

  auto info = [&](V v, const std::string& n) {
    OnnxValueInfo i;
    i.name = n;
    i.dtype = g.values[v].dtype;
    for (int64_t d : g.values[v].shape) {
      i.dims.push_back(d);
      i.dim_params.emplace_back();
    }
    if (batched[v] && !i.dims.empty()) i.dims[0] = -1, i.dim_params[0] = o.batch_dim;
    return i;
  };
  for (const auto& [n, v] : g.inputs) stats.inputs.push_back(info(v, name[v]));
  std::vector<OnnxValueInfo> outs;
  for (const auto& n : out_names) {
    const V v = g.outputs.at(n);
    if (name[v] != n) {  // a value given two output names, or an input as an output
      const std::string alias = names.claim(n);
      em.node("Identity", {name[v]}, {alias}, {});
      outs.push_back(info(v, alias));
    } else {
      outs.push_back(info(v, n));
    }
  }
  stats.outputs = o.finish ? o.finish(em, outs) : outs;

  for (const auto& i : stats.inputs) set_info(gp.add_input(), i);
  for (const auto& i : stats.outputs) set_info(gp.add_output(), i);
  prune(gp);
  model.set_ir_version(8);  // the IR of opset 17 (ONNX 1.12)
  model.set_producer_name("hrnet");
  model.set_producer_version(o.producer_version);
  model.set_doc_string(o.doc);
  auto* op = model.add_opset_import();
  op->set_domain("");
  op->set_version(o.opset);
  for (const auto& [k, v] : o.metadata) {
    auto* p = model.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  }

  try {
    ::onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    throw Error(str_cat("ONNX export: the model fails the ONNX checker: ", e.what()));
  }
  // strict shape inference (with data propagation through the Shape/Slice/Concat of Resize's
  // sizes): a node whose inferred type or shape contradicts another's, or the declared outputs,
  // fails here rather than in a runtime
  try {
    ::onnx::ShapeInferenceOptions si(true, 1, true);
    ::onnx::shape_inference::InferShapes(model, ::onnx::OpSchemaRegistry::Instance(), si);
  } catch (const std::exception& e) {
    throw Error(str_cat("ONNX export: ONNX shape inference fails on the model: ", e.what()));
  }
  gp.clear_value_info();

  stats.nodes = gp.node_size();
  stats.initializers = gp.initializer_size();
  for (const auto& t : gp.initializer()) stats.initializer_bytes += t.raw_data().size();
  for (const auto& n : gp.node()) ++stats.op_types[n.op_type()];
  return result;
}

}  // namespace hr
