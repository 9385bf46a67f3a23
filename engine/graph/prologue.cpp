// Pass (inference): the nodes that compute only from parameters and constants.
#include "engine/graph/passes.h"

namespace hr::graph {

std::vector<char> find_prologue(const GraphIR& g) {
  std::vector<char> prologue(g.nodes.size(), 0), constant(g.values.size(), 0);
  for (size_t v = 0; v < g.values.size(); ++v)
    constant[v] = g.values[v].kind == ValueKind::Param || g.values[v].kind == ValueKind::Constant;
  for (size_t i = 1; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    bool ok = !n.in.empty() && !n.out.empty();
    for (size_t k = 0; ok && k < n.in.size(); ++k)
      ok = !n.op->writes_input(k) && (n.in[k] < 0 || constant[n.in[k]]);
    if (!ok) continue;
    prologue[i] = 1;
    for (V o : n.out)
      if (o >= 0) constant[o] = 1;
  }
  return prologue;
}

}  // namespace hr::graph
