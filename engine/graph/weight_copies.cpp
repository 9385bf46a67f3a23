// Pass (training under autocast): the casts of fp32 parameters to f16/bf16 replaced by copies
// kept current outside the graph (by the optimizer's step).
#include <cstring>

#include "engine/graph/passes.h"

namespace hr::graph {

namespace {

// Binds node n's output to the copy, when n is a cast of an fp32 parameter to f16/bf16 whose
// copy copy_of gives. Returns whether it did (the node is then to be removed).
bool bind_copy(GraphIR& g, const Node& n, const WeightCopyFn& copy_of) {
  if (std::strcmp(n.op->name(), "cast") != 0 || n.in.size() != 1 || n.out.size() != 1)
    return false;
  const V in = n.in[0], out = n.out[0];
  if (in < 0 || out < 0) return false;
  for (const auto& [name, v] : g.outputs)
    if (v == out) return false;  // an output stays the graph's own value
  const Value& p = g.values[in];
  Value& y = g.values[out];
  if (p.kind != ValueKind::Param || p.dtype != DType::f32 ||
      (y.dtype != DType::f16 && y.dtype != DType::bf16))
    return false;
  Tensor c = copy_of(p.tensor, y.dtype);
  if (!c.defined()) return false;  // not kept elsewhere: the cast stays
  HR_CHECK(c.dtype() == y.dtype && c.shape() == y.shape && c.device() == g.opt.device &&
               c.is_contiguous(device_format(y.shape, g.opt.device)),
           "graph: the weight copy of ", p.tensor.str(), " is ", c.str(), ", expected a dense ",
           dtype_name(y.dtype), shape_str(y.shape), " tensor in the device's layout");
  y.kind = ValueKind::Param;
  y.tensor = std::move(c);
  return true;
}

}  // namespace

int64_t bind_weight_copies(GraphIR& g, const WeightCopyFn& copy_of) {
  if (!copy_of) return 0;
  int64_t bound = 0;
  std::vector<Node> keep;
  keep.reserve(g.nodes.size());
  for (Node& n : g.nodes) {
    if (bind_copy(g, n, copy_of))
      ++bound;
    else
      keep.push_back(std::move(n));
  }
  g.nodes.swap(keep);
  g.index_producers();
  return bound;
}

}  // namespace hr::graph
