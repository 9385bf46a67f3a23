// Pass (data-parallel training): each parameter's gradient averaged over the ranks by an
// all_reduce_mean node right after the node that completes it, on the reduction's own stream.
#include <algorithm>
#include <map>

#include "engine/graph/passes.h"
#include "engine/ops.h"

namespace hr::graph {

int64_t reduce_gradients(GraphIR& g, Gradients& grads, int stream) {
  std::map<int, std::vector<Node>> insert_after;  // by the producer's node index
  int64_t added = 0;
  for (const Tensor& p : grads.params) {
    V& v = grads.of_param.at(p.impl());
    const int producer = g.values[v].producer;
    V reduced = -1;
    std::vector<Node> made = record_detached(g, stream, [&] {
      reduced = g.value_of(ops::all_reduce_mean(g.symbolic(v)));
    });
    // a gradient no node computes (a constant): reduced at the start of the backward, after the
    // start node
    auto& slot = insert_after[std::max(producer, 0)];
    for (Node& n : made) slot.push_back(std::move(n));
    v = reduced;
    ++added;
  }
  std::vector<Node> out;
  out.reserve(g.nodes.size() + static_cast<size_t>(added));
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    out.push_back(std::move(g.nodes[i]));
    auto it = insert_after.find(static_cast<int>(i));
    if (it != insert_after.end())
      for (Node& n : it->second) out.push_back(std::move(n));
  }
  g.nodes.swap(out);
  g.index_producers();
  return added;
}

}  // namespace hr::graph
