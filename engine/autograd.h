// Reverse-mode automatic differentiation on a tape of Nodes.
// An op that records makes one Node holding (a) the edges to the nodes (or leaves) that produced
// its inputs and (b) a backward function mapping output gradients to input gradients. Saved
// tensors inside backward functions are detached, so no reference cycle forms. Gradients that
// reach a tensor along several paths (residuals, fuse sums) are summed before use.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hr {

struct Edge {
  std::shared_ptr<Node> node;          // producer of the input (null for leaves / constants)
  std::shared_ptr<TensorImpl> leaf;    // the leaf that accumulates, when node is null
  int output_nr = 0;
};

struct Node {
  std::string name;  // op name, for error messages
  std::vector<Edge> next;  // one per differentiable input, in input order
  int num_outputs = 1;
  // grads_out[i] is the gradient w.r.t. output i (undefined if none flowed).
  // Returns one gradient per input edge (undefined where not needed).
  std::function<std::vector<Tensor>(const std::vector<Tensor>& grads_out)> backward;
};

// Whether ops record nodes. Off inside NoGradGuard / InferenceMode and during backward.
bool grad_enabled();
void set_grad_enabled(bool on);

class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};
using InferenceMode = NoGradGuard;

// True when any input requires grad and grad mode is on.
bool needs_grad(const std::vector<Tensor>& inputs);

// Attach a node to outputs: makes the edges from `inputs`, sets grad_fn/output_nr/requires_grad
// on the outputs. `backward` receives one grad per output and returns one per input.
void record(const std::string& name, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& outputs,
            std::function<std::vector<Tensor>(const std::vector<Tensor>&)> backward);

// Run backward from `roots` with the given seed gradients; leaf grads accumulate in .grad().
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& seeds);

}  // namespace hr
