// Static graphs: a computation recorded once for fixed shapes, then compiled and replayed.
//
// A Graph is built with the same vocabulary as the eager ops (conv2d, batch_norm, relu, add,
// upsampling, concat, pooling, linear, losses), but records instead of computing: every shape is
// known when the op is added, and bad shapes are rejected then, with the op's name. Module
// tensors (weights, batch-norm statistics) enter as parameters by handle, so the compiled graph
// reads and updates the module's own tensors.
//
// Executable::compile turns a Graph into something that runs:
//  - fusion: batch norm followed by a residual add and/or ReLU becomes one batch_norm_act node
//    (one pass over memory instead of three, forward and backward);
//  - training: the backward graph is derived from the forward one (reverse mode, gradients that
//    reach a value along several paths summed by one node), giving each parameter's gradient;
//  - streams: every node runs on the stream its builder scope named (HRNet: one per resolution
//    branch). Cross-stream data edges become event record/wait pairs, only where no earlier
//    wait already orders the two nodes;
//  - memory: every intermediate value gets an offset in one arena. Two values may share bytes
//    only when every access to one is ordered before the definition of the other through stream
//    order and events (happens-before, computed with vector clocks), so the plan is valid for
//    any interleaving the streams can produce, not only for program order;
//  - on CUDA, one run can be captured as a CUDA graph and replayed (Executable::capture).
// The CPU runs the nodes in program order on one thread pool (the kernels use OpenMP inside).
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hr {
class Module;
class Conv2d;
class BatchNorm2d;
class Linear;
}  // namespace hr

namespace hr::graph {

using V = int;  // a value in a Graph; -1 means "none" (an absent bias or residual)

enum class Op : uint8_t {
  Start,  // the beginning of a run: defines the inputs
  End,    // the end of a run: uses the outputs and parameter gradients
  // forward
  Conv2d, BatchNorm, BatchNormAct, Relu, Add, UpsampleNearest, UpsampleBilinear, Concat, AvgPool,
  GlobalAvgPool, Linear, Cast, HeatmapLoss, CrossEntropy,
  // backward (made by the compiler)
  ConvBwdData, ConvBwdWeight, BatchNormBwd, BatchNormActBwd, ReluBwd, UpsampleNearestBwd,
  UpsampleBilinearBwd, ConcatBwd, AvgPoolBwd, GlobalAvgPoolBwd, LinearBwd, CastBwd,
  HeatmapLossBwd, CrossEntropyBwd, Sum,
};
const char* op_name(Op op);

enum class ValueKind : uint8_t {
  Activation,  // produced by a node; lives in the arena
  Input,       // bound per run with Executable::set_input; lives in the arena
  Param,       // a tensor owned elsewhere (module parameter or buffer), read or updated in place
  Constant,    // owned by the executable (the loss seed)
};

struct Value {
  Shape shape;
  DType dtype = DType::f32;
  ValueKind kind = ValueKind::Activation;
  Tensor tensor;     // Param / Constant
  std::string name;  // inputs, outputs, parameters
  int producer = -1;
};

struct Node {
  Op op = Op::Start;
  std::vector<V> in, out;  // -1 entries: an absent optional operand
  int stream = 0;
  // attributes (each op uses the ones it needs)
  std::array<int64_t, 2> stride{1, 1}, padding{0, 0}, kernel{1, 1};
  double scale = 0;             // upsampling scale factor (0: by output size)
  bool align_corners = false;   // bilinear
  bool count_include_pad = true;
  bool training = false;        // batch norm: batch statistics and running-stat update
  bool relu = false;            // batch_norm_act
  float momentum = 0.1f, eps = 1e-5f;
  int64_t ignore_index = 255;
  int64_t concat_dim = 1;
  Tensor num_batches_tracked;   // batch norm in training (host i64), may be undefined
  int forward = -1;             // backward nodes: the forward node they differentiate
};

struct GraphOptions {
  Device device = Device::cpu();
  // f16/bf16 on CUDA: conv2d and linear cast their inputs and weights as torch.autocast does
  // (fp32 master weights get fp32 gradients); ignored on the CPU, which computes in fp32.
  DType compute_dtype = DType::f32;
};

class Graph {
 public:
  explicit Graph(GraphOptions opt = GraphOptions());

  // ---- values ----
  V input(const std::string& name, const Shape& shape, DType dtype = DType::f32);
  // A tensor owned elsewhere; the same tensor (by handle) always gives the same value.
  V param(const Tensor& t, const std::string& name = "");
  void output(V v, const std::string& name);

  // ---- ops (shapes checked now; errors name the op and the shapes) ----
  V conv2d(V x, V w, V bias = -1, std::array<int64_t, 2> stride = {1, 1},
           std::array<int64_t, 2> padding = {0, 0});
  // running_mean/var: Param values. training: batch statistics, running stats updated in place
  // (and num_batches_tracked, a host i64 tensor, incremented) on every run.
  V batch_norm(V x, V gamma, V beta, V running_mean, V running_var, bool training,
               float momentum = 0.1f, float eps = 1e-5f, Tensor num_batches_tracked = Tensor());
  V relu(V x);
  V add(V a, V b);
  V upsample_nearest(V x, double scale);
  V upsample_bilinear(V x, int64_t out_h, int64_t out_w, bool align_corners);
  V concat(const std::vector<V>& xs);  // along channels
  V avg_pool2d(V x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
               std::array<int64_t, 2> padding = {0, 0}, bool count_include_pad = true);
  V global_avg_pool(V x);
  V linear(V x, V w, V bias = -1);
  V cast(V x, DType dtype);
  V heatmap_loss(V pred, V target, V weight);  // scalar f32
  V cross_entropy(V logits, V labels, int64_t ignore_index = 255);

  // Module conveniences: the module's tensors enter as parameters.
  V conv2d(const hr::Conv2d& m, V x);
  V batch_norm(hr::BatchNorm2d& m, V x);  // training follows m.is_training()
  V linear(const hr::Linear& m, V x);
  // Records a module tree made of Conv2d, BatchNorm2d, ReLU, Linear and Sequential (children in
  // order); any other module type is an error naming it (record its forward op by op instead).
  V module(hr::Module& m, V x);

  // ---- streams ----
  // Nodes added from now on run on stream `s` (0 = the main stream). On the CPU streams only
  // order the plan; on CUDA each is a cudaStream_t.
  void set_stream(int s);
  int stream() const { return stream_; }

  // ---- inspection ----
  const Value& value(V v) const;
  const std::vector<Value>& values() const { return values_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::map<std::string, V>& inputs() const { return inputs_; }
  const std::map<std::string, V>& outputs() const { return outputs_; }
  const GraphOptions& options() const { return opt_; }
  std::string str() const;  // one line per node: "%7 = conv2d(%3, %4) [stream 1] f32[8, 32, 64, 48]"

 private:
  friend class Executable;
  V new_value(const Shape& shape, DType dtype, ValueKind kind = ValueKind::Activation);
  int add_node(Node n);
  V autocast(V v);
  void check(V v, const char* op, const char* what) const;

  GraphOptions opt_;
  std::vector<Value> values_;
  std::vector<Node> nodes_;
  std::map<std::string, V> inputs_, outputs_;
  std::map<const void*, V> params_;  // by TensorImpl
  int stream_ = 0;
};

struct CompileOptions {
  bool fuse = true;  // batch_norm(+add)(+relu) -> batch_norm_act
  // Training: differentiate `loss` (a scalar value of the graph) with respect to every
  // parameter whose tensor requires grad. Their gradients live in the arena; see grad().
  V loss = -1;
  // Streams: false runs every node on the main stream.
  bool streams = true;
  // false: plan only (stats(), verify_plan()); nothing is allocated and run() throws.
  bool allocate = true;
};

struct PlanStats {
  int64_t nodes = 0, fused = 0, streams = 1, events = 0;
  int64_t arena_bytes = 0;      // the planned arena
  int64_t peak_live_bytes = 0;  // most bytes alive at once in program order: a lower bound
  int64_t total_bytes = 0;      // every planned value's bytes: the footprint with no reuse
};

class Executable {
 public:
  Executable(Graph graph, const CompileOptions& opt);
  ~Executable();
  Executable(const Executable&) = delete;
  Executable& operator=(const Executable&) = delete;

  // Copies `t` (any device, layout) into the input's buffer, which keeps it for every later run
  // until the next set_input. Shape must match exactly.
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

  // CUDA: records one run as a CUDA graph (after at least one run, which chose the convolution
  // algorithms and warmed the allocator); later run() calls replay it. `after` enqueues more work
  // on the main stream into the same graph (a capturable optimizer's enqueue_step), and
  // `before_replay` runs on the host before each replay (its prepare_step), so one replay is a
  // whole training step. Throws on the CPU.
  void capture(std::function<void()> after = {}, std::function<void()> before_replay = {});
  bool captured() const;

  // Test hook: run the nodes in a random order that respects stream order and the event edges
  // (what independent streams may do), single-threaded interleaving on the CPU. A wrong memory
  // plan shows up as different results.
  void run_interleaved(uint64_t seed);
  // Checks every pair of values that share arena bytes: one's accesses must all happen before
  // the other's definition. Throws naming the first violating pair.
  void verify_plan() const;

  // Per-op-kind wall time of CPU runs (enable first; CUDA runs are not timed here).
  void set_profiling(bool on);
  std::string profile_report() const;

  const PlanStats& stats() const;
  const Graph& graph() const;  // after compilation: fused, with the backward nodes

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hr::graph
