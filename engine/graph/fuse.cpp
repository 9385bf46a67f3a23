// Passes: batch norm -> [add] -> [relu] fused into one batch_norm node; a nearest upsampling
// fused into the add that consumes it.
#include <map>

#include "engine/graph/passes.h"
#include "engine/ops/batch_norm.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/resample.h"

namespace hr::graph {

namespace {

template <class T>
const T* as(const Node& n) {
  return dynamic_cast<const T*>(n.op.get());
}

// How many nodes use each value (graph outputs count as two uses: they stay), and the last of
// them.
struct Uses {
  std::vector<int> count, consumer;
  explicit Uses(const GraphIR& g) : count(g.values.size(), 0), consumer(g.values.size(), -1) {
    for (size_t i = 0; i < g.nodes.size(); ++i)
      for (V v : g.nodes[i].in)
        if (v >= 0) {
          ++count[v];
          consumer[v] = static_cast<int>(i);
        }
    for (const auto& [name, v] : g.outputs) count[v] += 2;
  }
  bool single(V v) const { return count[v] == 1; }
};

// The nodes not removed, those in `replace` (by position) replaced.
void rewrite(GraphIR& g, const std::vector<char>& removed, std::map<int, Node>& replace) {
  std::vector<Node> out;
  out.reserve(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    auto it = replace.find(static_cast<int>(i));
    if (it != replace.end()) out.push_back(std::move(it->second));
    else if (!removed[i]) out.push_back(std::move(g.nodes[i]));
  }
  g.nodes.swap(out);
  g.index_producers();
}

}  // namespace

int64_t fuse_batch_norm_act(GraphIR& g, bool differentiating) {
  auto& nodes = g.nodes;
  const Uses uses(g);
  const std::vector<int>& consumer = uses.consumer;

  std::vector<char> removed(nodes.size(), 0);
  std::map<int, Node> fused_at;  // position -> replacement
  for (size_t b = 0; b < nodes.size(); ++b) {
    const auto* bn = as<ops::BatchNormOp>(nodes[b]);
    if (!bn || bn->relu || nodes[b].in[5] >= 0 || removed[b]) continue;
    if (!bn->training && differentiating) continue;
    const V y = nodes[b].out[0];
    if (!uses.single(y)) continue;
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
      if (uses.single(s) && as<ops::ReluOp>(nodes[consumer[s]]) && !removed[consumer[s]]) {
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
  const auto fused = static_cast<int64_t>(fused_at.size());
  rewrite(g, removed, fused_at);
  return fused;
}

int64_t fuse_upsample_add(GraphIR& g) {
  auto& nodes = g.nodes;
  const Uses uses(g);
  std::vector<char> removed(nodes.size(), 0);
  int64_t fused = 0;
  for (size_t u = 0; u < nodes.size(); ++u) {
    OpPtr op = ops::upsample_add_op(*nodes[u].op);
    if (!op) continue;
    const V up = nodes[u].out[0];
    if (!uses.single(up)) continue;
    Node& add = nodes[uses.consumer[up]];
    if (!as<ops::AddOp>(add) || add.in[0] == add.in[1]) continue;
    const V other = add.in[0] == up ? add.in[1] : add.in[0];
    add.op = std::move(op);
    add.in = {nodes[u].in[0], other};
    removed[u] = 1;
    ++fused;
  }
  if (!fused) return 0;
  std::map<int, Node> none;
  rewrite(g, removed, none);
  return fused;
}

}  // namespace hr::graph
