// Pass (CPU inference): convolution weights prepacked once, in the prologue.
#include "engine/graph/passes.h"
#include "engine/ops/conv2d.h"

namespace hr::graph {

int64_t prepack_conv_weights(GraphIR& g) {
  if (!g.opt.device.is_cpu()) return 0;
  // constant values: parameters, constants and what the prologue computes from them
  const std::vector<char> prologue = find_prologue(g);
  auto constant = [&](V v) {
    const Value& val = g.values[v];
    return val.kind == ValueKind::Param || val.kind == ValueKind::Constant ||
           (val.producer >= 0 && prologue[val.producer]);
  };
  std::map<int, Node> insert_before;  // conv position -> its prepack node
  for (size_t c = 0; c < g.nodes.size(); ++c) {
    const auto* conv = dynamic_cast<const ops::Conv2dOp*>(g.nodes[c].op.get());
    if (!conv) continue;
    const std::vector<V> in = g.nodes[c].in;  // a copy: recording below grows g.nodes
    if (in.size() > 4 || in[1] < 0 || !constant(in[1]) || g.values[in[1]].dtype != DType::f32)
      continue;
    const Shape input = g.values[in[0]].shape;
    if (ops::conv2d_prepacked_size(input, g.values[in[1]].shape, conv->stride, conv->padding) <= 0)
      continue;
    V packed = -1;
    std::vector<Node> made = record_detached(g, g.nodes[c].stream, [&] {
      packed = g.value_of(
          ops::conv2d_prepack(g.symbolic(in[1]), input, conv->stride, conv->padding));
    });
    insert_before.emplace(static_cast<int>(c), std::move(made.at(0)));
    std::vector<V>& now = g.nodes[c].in;
    now.resize(4, -1);  // no residual: -1
    now.push_back(packed);
  }
  if (insert_before.empty()) return 0;
  std::vector<Node> out;
  out.reserve(g.nodes.size() + insert_before.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    auto it = insert_before.find(static_cast<int>(i));
    if (it != insert_before.end()) out.push_back(std::move(it->second));
    out.push_back(std::move(g.nodes[i]));
  }
  g.nodes.swap(out);
  g.index_producers();
  return static_cast<int64_t>(insert_before.size());
}

}  // namespace hr::graph
