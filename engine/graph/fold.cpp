// Pass (inference): batch norm folded into the convolution before it; and the two helpers
// rewriting passes share (recording detached nodes, removing dead ones).
#include <cstring>
#include <map>

#include "engine/graph/passes.h"
#include "engine/ops.h"
#include "engine/ops/batch_norm.h"
#include "engine/ops/conv2d.h"

namespace hr::graph {

std::vector<Node> record_detached(GraphIR& g, int stream, const std::function<void()>& f) {
  const size_t before = g.nodes.size();
  {
    StreamScope scope(stream);
    f();
  }
  std::vector<Node> made(std::make_move_iterator(g.nodes.begin() + static_cast<long>(before)),
                         std::make_move_iterator(g.nodes.end()));
  g.nodes.resize(before);
  return made;
}

int64_t remove_dead_nodes(GraphIR& g) {
  int64_t removed_total = 0;
  for (;;) {
    std::vector<int> uses(g.values.size(), 0);
    for (const Node& n : g.nodes)
      for (V v : n.in)
        if (v >= 0) ++uses[v];
    for (const auto& [name, v] : g.outputs) ++uses[v];
    std::vector<Node> keep;
    int64_t removed = 0;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      Node& n = g.nodes[i];
      bool used = i == 0;  // the start node defines the inputs
      for (V o : n.out) used = used || (o >= 0 && uses[o] > 0);
      for (size_t k = 0; k < n.in.size(); ++k) used = used || n.op->writes_input(k);
      if (used) keep.push_back(std::move(n));
      else ++removed;
    }
    g.nodes.swap(keep);
    removed_total += removed;
    if (removed == 0) break;
  }
  g.index_producers();
  return removed_total;
}

int64_t fold_batch_norm(GraphIR& g, bool epilogue) {
  std::vector<int> uses(g.values.size(), 0), consumer(g.values.size(), -1);
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (V v : g.nodes[i].in)
      if (v >= 0) {
        ++uses[v];
        consumer[v] = static_cast<int>(i);
      }
  for (const auto& [name, v] : g.outputs) uses[v] += 2;  // an output is never folded away
  auto is_param = [&](V v) { return v >= 0 && g.values[v].kind == ValueKind::Param; };

  std::map<int, std::vector<Node>> insert_before;  // conv position -> fold (and cast) nodes
  std::vector<char> removed(g.nodes.size(), 0);
  int64_t folds = 0;
  for (size_t c = 0; c < g.nodes.size(); ++c) {
    if (!dynamic_cast<const ops::Conv2dOp*>(g.nodes[c].op.get())) continue;
    // copies: recording below grows g.nodes
    const std::vector<V> conv_in = g.nodes[c].in;
    const int stream = g.nodes[c].stream;
    const V y = g.nodes[c].out[0];
    if (uses[y] != 1) continue;
    const int b = consumer[y];
    const auto bn = std::dynamic_pointer_cast<const ops::BatchNormOp>(g.nodes[b].op);
    const std::vector<V> bn_in = g.nodes[b].in;
    const V bn_out = g.nodes[b].out[0];
    if (!bn || bn->training || bn_in[0] != y) continue;
    const bool act = bn->relu || bn_in[5] >= 0;  // fused with a ReLU / residual add
    if (act && (!epilogue || conv_in.size() > 3)) continue;
    bool params = true;
    for (int k = 1; k <= 4; ++k) params = params && is_param(bn_in[k]);
    // the weight: a parameter, or a cast of one (autocast)
    V w = conv_in[1];
    const DType cast_to = g.values[w].dtype;
    bool cast = false;
    if (!is_param(w)) {
      const int p = g.values[w].producer;
      if (p < 0 || std::strcmp(g.nodes[p].op->name(), "cast") != 0 || !is_param(g.nodes[p].in[0]))
        continue;
      w = g.nodes[p].in[0];
      cast = true;
    }
    if (!params || (conv_in[2] >= 0 && !is_param(conv_in[2]))) continue;

    V wv = -1, bv = -1;
    insert_before[static_cast<int>(c)] = record_detached(g, stream, [&] {
      auto sym = [&](V v) { return v >= 0 ? g.symbolic(v) : Tensor(); };
      auto [wf, bf] = ops::fold_batch_norm(sym(w), sym(conv_in[2]), sym(bn_in[1]), sym(bn_in[2]),
                                           sym(bn_in[3]), sym(bn_in[4]), bn->eps);
      if (cast) wf = ops::cast(wf, cast_to);
      wv = g.value_of(wf);
      bv = g.value_of(bf);
    });
    g.nodes[c].in = {conv_in[0], wv, bv};
    g.nodes[c].out = {bn_out};
    if (act) {
      // The convolution takes the batch norm's place: its residual may be computed after it.
      const auto& op = static_cast<const ops::Conv2dOp&>(*g.nodes[c].op);
      auto conv = std::make_shared<ops::Conv2dOp>(op);
      conv->relu = bn->relu;
      g.nodes[c].op = std::move(conv);
      if (bn_in[5] >= 0) g.nodes[c].in.push_back(bn_in[5]);
      auto& at_bn = insert_before[b];
      for (Node& n : insert_before[static_cast<int>(c)]) at_bn.push_back(std::move(n));
      insert_before.erase(static_cast<int>(c));
      at_bn.push_back(std::move(g.nodes[c]));
      removed[c] = 1;
    }
    removed[b] = 1;
    ++folds;
  }
  std::vector<Node> out;
  out.reserve(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    auto it = insert_before.find(static_cast<int>(i));
    if (it != insert_before.end())
      for (Node& n : it->second) out.push_back(std::move(n));
    if (!removed[i]) out.push_back(std::move(g.nodes[i]));
  }
  g.nodes.swap(out);
  g.index_producers();
  if (folds) remove_dead_nodes(g);
  return folds;
}

}  // namespace hr::graph
