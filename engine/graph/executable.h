// Static graphs, compiled and run. Executable runs the passes of engine/graph/passes.h over a
// recorded Graph, allocates one arena and executes the nodes through their ops' own kernels:
//  - fusion: batch norm followed by a residual add and/or ReLU becomes one node;
//  - inference (CompileOptions::inference): the other batch norms folded into the convolution
//    before them, and the work that depends only on parameters (folded weights, casts of
//    weights, on the CPU convolution weights prepacked for their kernels) done once, not every
//    run;
//  - training (CompileOptions::loss): the backward derived from each op's backward rule, giving
//    each parameter's gradient in the arena;
//  - streams: each node on the stream its recording scope named (HRNet: one per resolution
//    branch), event record/wait pairs only where a cross-stream edge is not already ordered;
//  - memory: one arena, buffers shared only when happens-before allows it for every
//    interleaving the streams can produce;
//  - CUDA: one run can be captured as a CUDA graph and replayed (capture()).
// The CPU runs the nodes in program order (the kernels use OpenMP inside), or, with
// CompileOptions::cpu_branches, a stage's branches side by side on their own threads.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/graph/graph.h"

namespace hr::graph {

struct CompileOptions {
  bool fuse = true;  // batch_norm(+add)(+relu) -> one node; nearest upsample + add -> one node
  // Training: the scalar (a value of the graph) to differentiate with respect to every parameter
  // tensor that requires grad; the gradients live in the arena (grad()).
  Tensor loss;
  // Inference: the parameters are constants between refresh_constants() calls, so batch norm is
  // folded into convolutions and parameter-only work runs once. Needs inference-mode batch norm.
  bool inference = false;
  // CPU inference: convolution weights prepacked for their kernels once (Winograd: transformed;
  // graph pass prepack_conv_weights), for speed at the cost of memory (W32 pose: 200 MiB more
  // constants, 309 MiB instead of 109). false: transformed on every run.
  bool prepack = true;
  bool streams = true;    // false: every node on the main stream
  // CPU, with no more threads than streams: the branches of a stage run side by side, each op on
  // one thread (the streams dealt over the threads), instead of one op at a time on every
  // thread; the stem and the joins keep every thread (executable.cpp plan_cpu_branches).
  // HR_CPU_BRANCHES=0|1 overrides it.
  bool cpu_branches = false;
  // Training in a data-parallel job: the gradients averaged over the ranks inside the graph
  // (all_reduce_mean nodes on their own stream, each right after its gradient is complete;
  // passes.h reduce_gradients), so grad() gives the averages.
  bool reduce_gradients = false;
  bool allocate = true;   // false: plan only (stats(), verify_plan()); run() throws
  // Training under autocast: for a parameter the graph casts to f16/bf16, a copy of it in that
  // dtype which whoever changes the parameter keeps current (Optimizer::weight_copy: the
  // optimizer's step writes it). The graph reads the copies and casts no weight on its runs
  // (passes.h bind_weight_copies). Unset, or undefined for a parameter: that cast runs on every
  // run.
  WeightCopyFn weight_copy;
};

struct PlanStats {
  int64_t nodes = 0, fused = 0, folded = 0, streams = 1, events = 0;
  int64_t prepacked = 0;        // convolutions reading prepacked weights (CPU inference)
  int64_t upsample_adds = 0;    // upsamplings fused into their adds (fuse_upsample_add)
  int64_t weight_copies = 0;    // casts of weights replaced by kept copies (bind_weight_copies)
  int64_t branch_segments = 0;  // CPU: stretches run with the branches side by side (cpu_branches)
  int64_t prologue_nodes = 0;   // run once, not every run (inference)
  int64_t arena_bytes = 0;      // the planned arena
  int64_t peak_live_bytes = 0;  // most bytes alive at once in program order: a lower bound
  int64_t total_bytes = 0;      // every planned value's bytes: the footprint with no reuse
  int64_t constant_bytes = 0;   // of the arena: what the prologue computes (folded weights,
                                // prepacked weights)
};

class Executable {
 public:
  Executable(Graph graph, const CompileOptions& opt = CompileOptions());
  ~Executable();
  Executable(const Executable&) = delete;
  Executable& operator=(const Executable&) = delete;

  // Copies `t` (any device, layout) into the input's buffer, which keeps it for every later run
  // until the next set_input. Shape must match exactly. On CUDA from host memory: `t` is copied
  // into pinned staging memory (two buffers per input, used in turn) and uploaded
  // asynchronously on the main stream; the host waits only for the upload of two calls before
  // (never for the runs), and may reuse `t` at once.
  void set_input(const std::string& name, const Tensor& t);
  // One run: forward (and backward, for training), on the graph's device. Asynchronous on CUDA
  // (outputs are ready when the main stream is).
  void run();
  // A view of an output's buffer, valid until the next run.
  Tensor output(const std::string& name) const;
  // The gradient of a parameter tensor after run() (a view of its arena buffer, valid until the
  // next run); undefined when the loss does not depend on it.
  Tensor grad(const Tensor& param) const;
  // Parameters that receive gradients, in the order they were first used.
  std::vector<Tensor> trained_parameters() const;
  // CPU training runs: called with (parameter, its gradient) right after the node that completes
  // that gradient, while the rest of the backward pass is still to run (the data-parallel
  // gradient reduction starts there: dist::GradientReducer). Empty: none.
  void set_gradient_ready(std::function<void(const Tensor& param, const Tensor& grad)> ready);
  // Inference: recompute what was derived from the parameters (folded weights) after they
  // changed (training continued, a checkpoint was loaded).
  void refresh_constants();

  // CUDA: records one run as a CUDA graph (after at least one run, which chose the convolution
  // algorithms and warmed the allocator); later run() calls replay it. `after` enqueues more work
  // on the main stream into the same graph (a capturable optimizer's enqueue_step), and
  // `before_replay` runs before each replay, not captured, with the main stream current: what
  // it enqueues there runs before the graph (a capturable optimizer's prepare_step and its copy
  // of the hyper-parameters), so one replay is a whole training step. Throws on the CPU.
  void capture(std::function<void()> after = {}, std::function<void()> before_replay = {});
  bool captured() const;

  // Test hook: run the nodes in a random order that respects stream order and the event edges
  // (what independent streams may do), single-threaded interleaving on the CPU. A wrong memory
  // plan shows up as different results.
  void run_interleaved(uint64_t seed);
  // Checks every pair of values that share arena bytes: one's accesses must all happen before
  // the other's definition. Throws naming the first violating pair.
  void verify_plan() const;

  // Per-op wall time of CPU runs (enable first; CUDA runs are not timed here).
  void set_profiling(bool on, bool by_shape = false);
  std::string profile_report() const;

  const PlanStats& stats() const;
  const GraphIR& graph() const;  // after compilation: rewritten, with the backward nodes

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A forward function run through compiled inference graphs, one per input shape (compiled on
// first use): batch norm folded into convolutions, fused batch norm + add + ReLU, one planned
// arena. The forward must run batch norm in inference mode (Module::eval()).
class InferenceRunner {
 public:
  using Forward = std::function<std::vector<Tensor>(const Tensor& x)>;
  // autocast: f16/bf16 compute on CUDA (as torch.autocast), f32 to leave it off.
  InferenceRunner(Forward forward, Device device, DType autocast = DType::f32);
  ~InferenceRunner();
  // The outputs for x (any device; copied in): views of the graph's buffers, valid until the
  // next call.
  std::vector<Tensor> operator()(const Tensor& x);
  // The parameters changed: every compiled graph recomputes its folded weights.
  void refresh();
  const Executable* last() const { return last_; }

 private:
  Forward forward_;
  Device device_;
  DType autocast_;
  std::map<Shape, std::unique_ptr<Executable>> graphs_;
  std::map<Shape, size_t> outputs_;
  Executable* last_ = nullptr;
};

}  // namespace hr::graph
