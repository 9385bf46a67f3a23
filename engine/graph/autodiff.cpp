// Pass: reverse mode. Each node's backward is its op's own backward rule (engine/op.h), called
// with the node's values as symbolic tensors, so the gradient ops it applies are recorded into
// the graph: the same rule the eager tape runs.
#include "engine/graph/passes.h"
#include "engine/ops.h"

namespace hr::graph {

void add_end_node(GraphIR& g, const std::vector<V>& also_live) {
  std::vector<V> in;
  for (const auto& [name, v] : g.outputs) in.push_back(v);
  in.insert(in.end(), also_live.begin(), also_live.end());
  g.add_node(marker_op("end"), std::move(in), {}, 0);
}

Gradients differentiate(GraphIR& g, V loss) {
  HR_CHECK(loss >= 0 && loss < static_cast<V>(g.values.size()) && g.values[loss].shape.empty() &&
               g.values[loss].kind == ValueKind::Activation,
           "graph compile: the loss must be a scalar value computed by the graph");
  const Device dev = g.opt.device;
  // which values depend on a parameter that requires grad, through differentiable inputs
  std::vector<char> req(g.values.size(), 0);
  for (size_t v = 0; v < g.values.size(); ++v)
    if (g.values[v].kind == ValueKind::Param && g.values[v].tensor.requires_grad() &&
        is_floating(g.values[v].dtype))
      req[v] = 1;
  const size_t nfwd = g.nodes.size();
  for (size_t i = 1; i < nfwd; ++i) {
    const Node& n = g.nodes[i];
    bool r = false;
    for (size_t k = 0; k < n.in.size(); ++k)
      r = r || (n.in[k] >= 0 && req[n.in[k]] && n.op->differentiable(k));
    if (r)
      for (V o : n.out)
        if (o >= 0) req[o] = 1;
  }
  HR_CHECK(req[loss], "graph compile: the loss does not depend on any parameter that requires grad");

  Gradients grads;
  grads.seed = g.new_value({}, DType::f32, ValueKind::Constant);
  g.values[grads.seed].tensor = Tensor::full({}, 1.f, DType::f32, dev);
  g.values[grads.seed].name = "loss_seed";

  // the gradient contributions of each value, summed when first needed
  std::vector<std::vector<V>> parts(g.values.size());
  parts[loss].push_back(grads.seed);
  AutocastGuard no_autocast(DType::f32);  // gradient ops run in the dtypes the forward chose
  auto gradient = [&](V v, int stream) -> Tensor {
    const std::vector<V> p = parts[v];
    if (p.empty()) return Tensor();
    Tensor sum = g.symbolic(p[0]);
    if (p.size() > 1) {
      StreamScope scope(stream);
      for (size_t k = 1; k < p.size(); ++k) sum = ops::add(sum, g.symbolic(p[k]));
      parts.resize(g.values.size());
      parts[v] = {g.value_of(sum)};
    }
    return sum;
  };
  auto sym = [&](V v) { return v >= 0 ? g.symbolic(v) : Tensor(); };

  for (int i = static_cast<int>(nfwd) - 1; i >= 1; --i) {
    const Node n = g.nodes[i];  // a copy: recording grows g.nodes
    std::vector<bool> need(n.in.size(), false);
    bool any_need = false;
    for (size_t k = 0; k < n.in.size(); ++k) {
      need[k] = n.in[k] >= 0 && req[n.in[k]] && n.op->differentiable(k);
      any_need = any_need || need[k];
    }
    if (!any_need) continue;
    std::vector<Tensor> gout(n.out.size());
    bool any_grad = false;
    for (size_t k = 0; k < n.out.size(); ++k) {
      if (n.out[k] < 0) continue;
      gout[k] = gradient(n.out[k], n.stream);
      any_grad = any_grad || gout[k].defined();
    }
    if (!any_grad) continue;
    std::vector<Tensor> in(n.in.size()), out(n.out.size());
    std::vector<Meta> in_meta(n.in.size());
    for (size_t k = 0; k < n.in.size(); ++k) {
      in[k] = sym(n.in[k]);
      if (n.in[k] >= 0) in_meta[k] = g.values[n.in[k]].meta(dev);
    }
    for (size_t k = 0; k < n.out.size(); ++k) out[k] = sym(n.out[k]);
    std::vector<Tensor> gin;
    {
      StreamScope scope(n.stream);
      gin = n.op->backward(GradArgs{in, in_meta, out, gout, need});
    }
    HR_CHECK(gin.size() == n.in.size(), "graph compile: the backward of ", n.op->name(),
             " returned ", gin.size(), " gradients for ", n.in.size(), " inputs");
    parts.resize(g.values.size());
    for (size_t k = 0; k < n.in.size(); ++k)
      if (need[k] && gin[k].defined()) parts[n.in[k]].push_back(g.value_of(gin[k]));
  }

  // parameter gradients, in first-use order, each summed on the stream of its first part
  std::vector<char> seen(g.values.size(), 0);
  for (size_t i = 1; i < nfwd; ++i)
    for (V v : g.nodes[i].in) {
      if (v < 0 || seen[v] || g.values[v].kind != ValueKind::Param || !req[v]) continue;
      seen[v] = 1;
      if (parts[v].empty()) continue;
      const int producer = g.values[parts[v][0]].producer;
      const Tensor gv = gradient(v, producer >= 0 ? g.nodes[producer].stream : 0);
      grads.of_param[g.values[v].tensor.impl()] = g.value_of(gv);
      grads.params.push_back(g.values[v].tensor);
    }
  return grads;
}

}  // namespace hr::graph
