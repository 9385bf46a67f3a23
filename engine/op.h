// The op definition: every op of the engine is one OpDef subclass, defined once (engine/ops/*.cpp)
// and used by eager calls, graph recording, graph compilation and execution alike:
//  - infer(): argument checks (errors name the op and the shapes) and the outputs' shapes and
//    dtypes;
//  - run_cpu() / run_cuda(): the kernel call on each device (kernels/cpu, kernels/cuda; a
//    CPU-only build links stubs that throw);
//  - backward(): the gradients of the inputs, written with ops, so that the same rule serves the
//    eager tape (it runs at once) and the static graph's reverse mode (it records nodes);
//  - to_onnx(): the op's ONNX translation, for exporting inference graphs (engine/onnx_emitter.h).
// apply() is the one dispatcher: it computes at once on eager tensors, or appends a node when an
// input is a value of a graph being recorded (engine/graph/graph.h).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/cuda/cuda_kernels.h"

namespace hr {

class OnnxEmitter;  // engine/onnx_emitter.h
struct OnnxNode;

// What an op knows of an operand before any data exists. `defined` is false for an optional
// operand left out (a bias, a residual) and for an output the op does not produce.
struct Meta {
  bool defined = false;
  Shape shape;
  DType dtype = DType::f32;
  Device device;

  static Meta of(const Tensor& t);
  static Meta make(Shape shape, DType dtype, Device device) {
    return Meta{true, std::move(shape), dtype, device};
  }
  static Meta none() { return Meta{}; }
  int64_t numel() const { return shape_numel(shape); }
  int64_t bytes() const { return numel() * static_cast<int64_t>(dtype_size(dtype)); }
  std::string str() const;  // "f32[8, 32, 64, 48] cpu"
};

// The dense layout each device's kernels take: contiguous NCHW on the CPU, channels-last (NHWC)
// for 4-D tensors on CUDA.
MemoryFormat device_format(const Shape& shape, Device device);

// One execution of an op's kernel. Inputs and outputs are dense in the device's layout; absent
// operands are undefined tensors. Kernels overwrite their outputs. `stream` is the CUDA stream
// to launch on (also the thread's current stream while the op runs).
struct KernelArgs {
  const std::vector<Tensor>& in;
  const std::vector<Tensor>& out;
  cuda::Stream stream = nullptr;
};

// What a backward rule sees: the forward's inputs and outputs (eager: those the op saves, the
// others undefined; graph: every one, as values of the graph), every input's meta, the gradient
// of each output (undefined where none flowed), and which inputs want a gradient.
struct GradArgs {
  const std::vector<Tensor>& in;
  const std::vector<Meta>& in_meta;
  const std::vector<Tensor>& out;
  const std::vector<Tensor>& grad_out;
  const std::vector<bool>& need;
};

class OpDef {
 public:
  virtual ~OpDef() = default;
  virtual const char* name() const = 0;
  // The attributes, for printing a graph ("stride 2, padding 1"); empty when none.
  virtual std::string attributes() const { return ""; }

  // Checks the inputs (errors name the op and the shapes) and returns the outputs' metas.
  virtual std::vector<Meta> infer(const std::vector<Meta>& in) const = 0;
  virtual void run_cpu(const KernelArgs& a) const = 0;
  virtual void run_cuda(const KernelArgs& a) const = 0;
  // A host-side effect of one execution (batch norm's num_batches_tracked += 1): eager calls
  // make it after the kernel, compiled graphs once per run, captured replays included.
  virtual void on_run() const {}
  // Inputs the op writes in place (batch norm's running statistics in training): they must be
  // tensors owned outside any graph.
  virtual bool writes_input(size_t i) const { return false; }

  // Whether input i can carry a gradient (labels, targets, running statistics cannot).
  virtual bool differentiable(size_t i) const { return true; }
  // One gradient per input (undefined where not needed), computed with ops. The default throws
  // "<op> has no backward".
  virtual std::vector<Tensor> backward(const GradArgs& a) const;
  // What the eager tape keeps for backward(): inputs (default: all) and outputs (default: none).
  virtual bool saves_input(size_t i) const { return true; }
  virtual bool saves_output(size_t i) const { return false; }

  // Multiply-adds of one execution (convolutions, matrix products), for model summaries.
  virtual double macs(const std::vector<Meta>& in) const { return 0; }

  // The op as ONNX nodes (opset 17) computing n.out from n.in as the op's kernels do in
  // inference, written through `e`. The default throws "<op> has no ONNX export".
  virtual void to_onnx(OnnxEmitter& e, const OnnxNode& n) const;
};

using OpPtr = std::shared_ptr<const OpDef>;

// Runs `op` on `inputs` (undefined tensors for absent optional operands) and returns one tensor
// per output (undefined where the op produces none):
//  - eager: inputs made dense in the device's layout, new outputs, the kernel on the current
//    stream, on_run(), and, when grad mode is on and a differentiable input requires grad, a
//    backward node on the tape;
//  - when an input is a symbolic tensor of a graph being recorded, a node appended to that graph
//    (other inputs enter it as parameters, by handle) and symbolic outputs.
std::vector<Tensor> apply(OpPtr op, const std::vector<Tensor>& inputs);

// The kernel call of `op` for the inputs' device (no checks, no tape): what apply() and the graph
// executor both end with.
void run_kernel(const OpDef& op, const KernelArgs& a, Device device);

}  // namespace hr
