// Pass: batch norm -> [add] -> [relu] fused into one batch_norm node.
#include <map>

#include "engine/graph/passes.h"
#include "engine/ops/batch_norm.h"
#include "engine/ops/elementwise.h"

namespace hr::graph {

namespace {

template <class T>
const T* as(const Node& n) {
  return dynamic_cast<const T*>(n.op.get());
}

}  // namespace

int64_t fuse_batch_norm_act(GraphIR& g, bool differentiating) {
  auto& nodes = g.nodes;
  std::vector<int> uses(g.values.size(), 0), consumer(g.values.size(), -1);
  for (size_t i = 0; i < nodes.size(); ++i)
    for (V v : nodes[i].in)
      if (v >= 0) {
        ++uses[v];
        consumer[v] = static_cast<int>(i);
      }
  std::vector<char> is_output(g.values.size(), 0);
  for (const auto& [name, v] : g.outputs) is_output[v] = 1;
  auto single_use = [&](V v) { return uses[v] == 1 && !is_output[v]; };

  std::vector<char> removed(nodes.size(), 0);
  std::map<int, Node> fused_at;  // position -> replacement
  for (size_t b = 0; b < nodes.size(); ++b) {
    const auto* bn = as<ops::BatchNormOp>(nodes[b]);
    if (!bn || bn->relu || nodes[b].in[5] >= 0 || removed[b]) continue;
    if (!bn->training && differentiating) continue;
    const V y = nodes[b].out[0];
    if (!single_use(y)) continue;
    const int c = consumer[y];
    if (removed[c]) continue;
    auto fused = std::make_shared<ops::BatchNormOp>(*bn);
    fused->fused = true;
    Node f = nodes[b];
    int last;
    if (as<ops::ReluOp>(nodes[c])) {
      fused->relu = true;
      f.out[0] = nodes[c].out[0];
      last = c;
    } else if (as<ops::AddOp>(nodes[c]) && nodes[c].in[0] != nodes[c].in[1]) {
      f.in[5] = nodes[c].in[0] == y ? nodes[c].in[1] : nodes[c].in[0];
      const V s = nodes[c].out[0];
      last = c;
      f.out[0] = s;
      if (single_use(s) && as<ops::ReluOp>(nodes[consumer[s]]) && !removed[consumer[s]]) {
        const int r = consumer[s];
        fused->relu = true;
        f.out[0] = nodes[r].out[0];
        removed[c] = 1;
        last = r;
      }
    } else {
      continue;
    }
    f.op = fused;
    f.stream = nodes[last].stream;
    removed[b] = removed[c] = removed[last] = 1;
    fused_at[last] = std::move(f);
  }
  std::vector<Node> out;
  out.reserve(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    auto it = fused_at.find(static_cast<int>(i));
    if (it != fused_at.end()) out.push_back(std::move(it->second));
    else if (!removed[i]) out.push_back(std::move(nodes[i]));
  }
  nodes.swap(out);
  g.index_producers();
  return static_cast<int64_t>(fused_at.size());
}

}  // namespace hr::graph
