// The graph compiler's passes: each a function over a GraphIR, in its own file, testable alone.
// Executable (executable.h) runs them in this order:
//   fuse_batch_norm_act -> fuse_upsample_add -> fold_batch_norm (inference)
//   -> prepack_conv_weights (CPU inference)
//   -> differentiate (training) -> reduce_gradients (data-parallel training)
//   -> bind_weight_copies (training under autocast) -> add_end_node
//   -> find_prologue (inference) -> schedule -> plan_memory
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "engine/graph/graph.h"

namespace hr::graph {

// ---- rewrites (fuse.cpp, fold.cpp) ----
// batch_norm -> [add(residual)] -> [relu] whose intermediate values have no other use becomes one
// fused batch_norm node (one pass over memory in each direction), placed where the last of them
// was. With `differentiating`, inference-mode batch norms stay unfused (their backward is rare and
// keeps one fused path). Returns the number of fusions.
int64_t fuse_batch_norm_act(GraphIR& g, bool differentiating);

// A nearest upsampling whose output has no other use than one add becomes, with the add, one
// upsample_nearest_add node (r + up(x) in one pass: HRNet's fuse layers no longer write
// the upsampled map and read it back), placed where the add was. Same bits; the backward is the
// two ops'. Returns the number of fusions.
int64_t fuse_upsample_add(GraphIR& g);

// Inference: a batch norm (inference statistics, parameters) right after a convolution whose
// output has no other use is folded into the convolution: a fold_batch_norm node computes the
// folded weight and bias from the parameters (then cast as the convolution's weight was, under
// autocast), and the convolution writes the batch norm's output. A batch norm fused with a
// residual add and/or ReLU is folded only with `epilogue` (CPU graphs: the convolution's kernel
// applies them to its output tiles, Conv2dOp); otherwise it keeps its one fused pass. Nodes left
// without a use are removed. Returns the number of folds.
int64_t fold_batch_norm(GraphIR& g, bool epilogue = false);

// Records what `f` records into g (on `stream`), takes those nodes out of g and returns them, so
// a pass can place them where it wants; the values they define stay in g.
std::vector<Node> record_detached(GraphIR& g, int stream, const std::function<void()>& f);

// Removes nodes none of whose outputs is used or is a graph output, with no side effect
// (writes_input), repeatedly. Returns the number removed.
int64_t remove_dead_nodes(GraphIR& g);

// ---- reverse mode (autodiff.cpp) ----
struct Gradients {
  V seed = -1;                           // the loss's gradient, 1 (a constant)
  std::map<const void*, V> of_param;     // parameter TensorImpl -> its gradient value
  std::vector<Tensor> params;            // parameters with gradients, in first-use order
};
// Appends the backward of every node the scalar `loss` depends on, derived with each op's own
// backward rule (recorded on the forward node's stream); gradients reaching a value along several
// paths are summed. Differentiates with respect to every parameter tensor that requires grad.
Gradients differentiate(GraphIR& g, V loss);

// Data-parallel training (engine/dist.h): each parameter's gradient averaged over the ranks by an
// all_reduce_mean node placed right after the node that completes it, on `stream` (its own, so
// that the reductions overlap with the rest of the backward pass; the scheduler puts events at
// the joins); grads then names the averaged values. The nodes are in the same order on every
// rank (the graph's), as collectives must be. Returns the number of nodes added.
int64_t reduce_gradients(GraphIR& g, Gradients& grads, int stream);

// ---- weight copies (weight_copies.cpp) ----
// Training under autocast: each cast of an fp32 parameter to f16/bf16 reads instead the copy
// copy_of(parameter, dtype) returns, a tensor that whoever changes the parameter keeps current
// (Optimizer::weight_copy: the optimizer's step writes it in the same pass as the update), and
// the cast node goes: no cast kernel per weight per run, no arena bytes for the casts' outputs,
// and one copy shared by every graph of the model. A cast whose copy_of returns an undefined
// tensor stays. Runs after differentiate: the cast's backward (the weight gradient cast back to
// fp32) stays. Returns the number of casts replaced.
int64_t bind_weight_copies(GraphIR& g, const WeightCopyFn& copy_of);

// The end node: it uses the outputs and `also_live` (the gradients), so they live to the end of
// a run; the scheduler joins every stream into it.
void add_end_node(GraphIR& g, const std::vector<V>& also_live);

// CPU inference: each convolution whose weight is constant (a parameter or computed from them
// in the prologue, as folded weights) and whose shape has a prepacked kernel (Winograd:
// cpu::conv2d_prepacked_size) gets a conv2d_prepack node before it, which runs in the prologue,
// and reads the prepacked weights (its fifth input) instead of transforming them on every run.
// Returns the number of convolutions so given.
int64_t prepack_conv_weights(GraphIR& g);

// ---- parameters as constants (prologue.cpp) ----
// Inference (parameters frozen between refreshes): the nodes that compute only from parameters
// and constants (batch-norm folding, casts of weights), transitively. They run once before the
// first run and on Executable::refresh_constants(), not every run. Per node.
std::vector<char> find_prologue(const GraphIR& g);

// ---- streams and events (schedule.cpp) ----
struct Schedule {
  int streams = 1;
  std::vector<int> pos;                 // 1-based position of each node on its stream
  std::vector<std::vector<int>> vc_in;  // per node: vector clock of what happens before it
  std::vector<std::vector<int>> waits;  // per node: producer nodes whose events it waits on
  std::vector<char> records;            // per node: records an event after it
  int64_t events = 0;
  // node a happens before node b (stream order and events)
  bool before(const GraphIR& g, int a, int b) const {
    return a != b && pos[a] <= vc_in[b][g.nodes[a].stream];
  }
};
// Makes stream ids dense (0 stays the main stream; every node on 0 when !streams), puts the start
// and end nodes on stream 0, and places event record/wait pairs on cross-stream data edges,
// pruned with vector clocks where an earlier wait already orders the two nodes. A side stream's
// first node waits for the start; the end joins every stream. Nodes in `skip` (the prologue,
// done before a run starts) take no part. The last node must be the end node.
Schedule schedule(GraphIR& g, bool streams, const std::vector<char>& skip);

// ---- memory (memory_plan.cpp) ----
// Packs buffers of `bytes` (rounded up to `align`) into one arena, largest first, each at the
// lowest offset where it overlaps no placed buffer it conflicts with. Returns the offsets and
// sets *arena_bytes.
std::vector<int64_t> pack_buffers(const std::vector<int64_t>& bytes,
                                  const std::function<bool(size_t, size_t)>& conflict,
                                  int64_t align, int64_t* arena_bytes);

struct MemoryPlan {
  std::vector<int64_t> offset;  // by value; -1 when not in the arena
  int64_t arena_bytes = 0;      // the planned arena
  int64_t peak_live_bytes = 0;  // most bytes alive at once in program order: a lower bound
  int64_t total_bytes = 0;      // every planned value's bytes: the footprint with no reuse
  int64_t persistent_bytes = 0; // the outputs of `persistent` nodes (folded weights)
};
// Every activation and input gets an offset. Two values share bytes only when every access to
// one happens before the definition of the other (stream order and events), so the plan is
// valid for any interleaving the streams allow. Inputs and the outputs of `persistent` nodes
// (the prologue) keep their bytes for the executable's life.
MemoryPlan plan_memory(const GraphIR& g, const Schedule& s, const std::vector<char>& persistent);
// Checks every pair of values sharing bytes; throws naming the first violating pair.
void verify_plan(const GraphIR& g, const Schedule& s, const MemoryPlan& p);

}  // namespace hr::graph
