// The tape: backward nodes recorded by eager ops, and the backward pass (topological order over
// the recorded nodes, gradient buffers summed per node output, leaf gradients accumulated into
// .grad()).
#include "engine/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "engine/op.h"
#include "engine/ops.h"

namespace hr {

namespace {
thread_local bool g_grad_enabled = true;

// a + b, either possibly undefined.
Tensor accumulate(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return ops::add(a, b);
}
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool on) { g_grad_enabled = on; }

const char* Node::name() const { return op ? op->name() : "?"; }

void record(const std::shared_ptr<const OpDef>& op, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& dense_inputs, const std::vector<Tensor>& outputs) {
  if (!g_grad_enabled) return;
  std::vector<bool> need(inputs.size(), false);
  bool any = false;
  for (size_t i = 0; i < inputs.size(); ++i) {
    need[i] = inputs[i].defined() && inputs[i].requires_grad() && op->differentiable(i);
    any = any || need[i];
  }
  if (!any) return;
  auto node = std::make_shared<Node>();
  node->op = op;
  node->need = std::move(need);
  node->num_outputs = static_cast<int>(outputs.size());
  node->next.resize(inputs.size());
  node->saved_in.resize(inputs.size());
  node->in_meta.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (node->need[i]) {
      Edge& e = node->next[i];
      if (t.grad_fn()) {
        e.node = t.grad_fn();
        e.output_nr = t.impl()->output_nr;
      } else {
        e.leaf = t.impl_ptr();
      }
    }
    node->in_meta[i] = Meta::of(t);
    if (dense_inputs[i].defined() && op->saves_input(i)) node->saved_in[i] = dense_inputs[i].detach();
  }
  node->saved_out.resize(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i)
    if (outputs[i].defined() && op->saves_output(i)) node->saved_out[i] = outputs[i].detach();
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!outputs[i].defined()) continue;
    TensorImpl* o = outputs[i].impl();
    o->requires_grad = true;
    o->grad_fn = node;
    o->output_nr = static_cast<int>(i);
  }
}

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& seeds) {
  HR_CHECK(roots.size() == seeds.size(), "backward: ", roots.size(), " roots but ", seeds.size(),
           " seeds");
  NoGradGuard no_grad;
  // Gradient buffers per node (one slot per output).
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  std::unordered_map<Node*, int> deps;
  std::vector<std::shared_ptr<Node>> stack;
  std::unordered_set<Node*> seen;

  auto accumulate_leaf = [](const std::shared_ptr<TensorImpl>& leaf, const Tensor& g) {
    Tensor& dst = leaf->grad;
    HR_CHECK(g.shape() == leaf->shape, "backward: gradient of shape ", shape_str(g.shape()),
             " for a leaf of shape ", shape_str(leaf->shape));
    dst = dst.defined() ? ops::add(dst, g) : g.clone();
  };

  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    HR_CHECK(r.requires_grad(), "backward: tensor ", r.str(), " does not require grad");
    HR_CHECK(seeds[i].shape() == r.shape(), "backward: seed shape ", shape_str(seeds[i].shape()),
             " does not match ", shape_str(r.shape()));
    if (!r.grad_fn()) {
      accumulate_leaf(r.impl_ptr(), seeds[i]);
      continue;
    }
    Node* n = r.grad_fn().get();
    auto& buf = buffers[n];
    buf.resize(n->num_outputs);
    buf[r.impl()->output_nr] = accumulate(buf[r.impl()->output_nr], seeds[i]);
    if (seen.insert(n).second) stack.push_back(r.grad_fn());
  }

  // Count, for each node, how many edges point to it (from nodes reachable from the roots).
  std::vector<std::shared_ptr<Node>> order = stack;
  for (size_t k = 0; k < order.size(); ++k) {
    for (const Edge& e : order[k]->next) {
      if (!e.node) continue;
      deps[e.node.get()]++;
      if (seen.insert(e.node.get()).second) order.push_back(e.node);
    }
  }

  // Process nodes whose consumers have all delivered their gradients.
  std::vector<std::shared_ptr<Node>> ready;
  for (auto& n : stack)
    if (deps[n.get()] == 0) ready.push_back(n);
  while (!ready.empty()) {
    std::shared_ptr<Node> n = ready.back();
    ready.pop_back();
    std::vector<Tensor> grads_out = std::move(buffers[n.get()]);
    buffers.erase(n.get());
    grads_out.resize(n->num_outputs);
    bool any = false;
    for (const auto& g : grads_out) any = any || g.defined();
    std::vector<Tensor> grads_in;
    if (any) {
      grads_in = n->op->backward(GradArgs{n->saved_in, n->in_meta, n->saved_out, grads_out, n->need});
      HR_CHECK(grads_in.size() == n->next.size(), "backward of ", n->name(), " returned ",
               grads_in.size(), " gradients for ", n->next.size(), " inputs");
    } else {
      grads_in.resize(n->next.size());
    }
    for (size_t i = 0; i < n->next.size(); ++i) {
      const Edge& e = n->next[i];
      const Tensor& g = grads_in[i];
      if (e.leaf) {
        if (g.defined()) accumulate_leaf(e.leaf, g);
      } else if (e.node) {
        auto& buf = buffers[e.node.get()];
        buf.resize(e.node->num_outputs);
        if (g.defined()) buf[e.output_nr] = accumulate(buf[e.output_nr], g);
        if (--deps[e.node.get()] == 0) ready.push_back(e.node);
      }
    }
  }
}

}  // namespace hr
