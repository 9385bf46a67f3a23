// Reverse-mode automatic differentiation on a tape of Nodes.
// An eager op that records (engine/op.h apply) makes one Node holding the op's definition, the
// tensors its backward rule reads (detached, so no reference cycle forms) and the edges to the
// nodes (or leaves) that produced its inputs. Gradients that reach a tensor along several paths
// (residuals, fuse sums) are summed before use.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/op.h"
#include "engine/tensor.h"

namespace hr {

struct Edge {
  std::shared_ptr<Node> node;          // producer of the input (null for leaves / constants)
  std::shared_ptr<TensorImpl> leaf;    // the leaf that accumulates, when node is null
  int output_nr = 0;
};

struct Node {
  std::shared_ptr<const OpDef> op;
  std::vector<Edge> next;           // one per input, in input order (empty edge: no gradient)
  std::vector<Tensor> saved_in;     // the inputs the op's backward reads (others undefined)
  std::vector<Meta> in_meta;        // every input's shape, dtype and device
  std::vector<Tensor> saved_out;    // the outputs it reads
  std::vector<bool> need;           // per input: a gradient is wanted
  int num_outputs = 1;
  const char* name() const;
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

// Attaches a backward node for `op` to its eager outputs when grad mode is on and a
// differentiable input requires grad: edges from the inputs, the saved tensors, grad_fn,
// output_nr and requires_grad on the outputs. `inputs` are the dense tensors the kernel read.
void record(const std::shared_ptr<const OpDef>& op, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& dense_inputs, const std::vector<Tensor>& outputs);

// Run backward from `roots` with the given seed gradients; leaf grads accumulate in .grad().
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& seeds);

}  // namespace hr
