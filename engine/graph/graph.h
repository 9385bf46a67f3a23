// Static graphs, recorded: the graph's data structure (values and nodes, what the compiler passes
// of engine/graph/passes.h rewrite) and recording.
//
// A graph is recorded with the eager vocabulary itself. Graph::input() returns a symbolic tensor
// (a shape, a dtype, a device, no data); every op applied to a symbolic tensor (engine/op.h
// apply) appends a node and returns symbolic outputs, with its shapes checked by the op's own
// infer(). Real tensors met by such an op (module weights, batch-norm statistics) enter the
// graph as parameters by handle, so a compiled graph reads and updates the module's own tensors.
// So model code is written once: `model.forward(g.input("x", shape))` records the model.
//
//   graph::Graph g;                                  // GraphOptions{device}
//   Tensor x = g.input("x", {8, 3, 256, 192});
//   Tensor loss = ops::heatmap_loss(model(x), g.input("target", ...), g.input("weight", ...));
//   g.output(loss, "loss");
//   graph::CompileOptions co;
//   co.loss = loss;                                  // training: derive the backward
//   graph::Executable step(std::move(g), co);        // engine/graph/executable.h
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/op.h"
#include "engine/tensor.h"

namespace hr::graph {

using V = int;  // a value of a graph; -1: none (an absent optional operand or output)

enum class ValueKind : uint8_t {
  Activation,  // produced by a node; planned in the arena
  Input,       // bound per run (Executable::set_input); planned in the arena
  Param,       // a tensor owned elsewhere (module weight or buffer), read or updated in place
  Constant,    // a tensor owned by the compiled graph (the loss seed, folded weights)
};

struct Value {
  Shape shape;
  DType dtype = DType::f32;
  ValueKind kind = ValueKind::Activation;
  Tensor tensor;     // Param / Constant
  std::string name;  // inputs, outputs, parameters
  int producer = -1;
  Meta meta(Device d) const { return Meta::make(shape, dtype, d); }
};

struct Node {
  OpPtr op;
  std::vector<V> in, out;  // -1 entries: absent operands / outputs
  int stream = 0;          // the stream the node runs on (0: the main stream)
};

// For a parameter a graph casts to f16/bf16, a copy of it in that dtype kept current elsewhere
// (CompileOptions::weight_copy), or an undefined tensor.
using WeightCopyFn = std::function<Tensor(const Tensor& param, DType dtype)>;

struct GraphOptions {
  Device device = Device::cpu();
};

// The graph: nodes[0] is the start node (it defines the inputs); compilation appends the end node
// (it uses the outputs and the gradients). Passes edit values and nodes directly.
struct GraphIR {
  GraphOptions opt;
  std::vector<Value> values;
  std::vector<Node> nodes;
  std::map<std::string, V> inputs, outputs;
  std::map<const void*, V> params;  // TensorImpl -> its value
  bool sealed = false;              // compiled: user code may no longer record into it
  std::weak_ptr<GraphIR> self;      // the owning pointer symbolic tensors share

  V new_value(const Shape& shape, DType dtype, ValueKind kind = ValueKind::Activation);
  V param(const Tensor& t, const std::string& name = "");
  // A new node of `op` on `in` with outputs of the given metas (absent ones get -1), on `stream`.
  int add_node(OpPtr op, std::vector<V> in, const std::vector<Meta>& out, int stream);
  // A symbolic tensor standing for value v (for recording ops on it).
  Tensor symbolic(V v);
  // The value a symbolic tensor of this graph stands for (-1 for an undefined tensor).
  V value_of(const Tensor& t) const;
  // Recomputes every value's producer from the nodes (after a pass moved nodes).
  void index_producers();
  std::string str() const;  // one line per node: "#7 %9 = conv2d(%3, %4) [stream 1] f32[8, 32, 64, 48]"
};

class Graph {
 public:
  explicit Graph(GraphOptions opt = GraphOptions());

  // A per-run input: a symbolic tensor on the graph's device.
  Tensor input(const std::string& name, const Shape& shape, DType dtype = DType::f32);
  // Names a computed value (or an input) as an output of the compiled graph.
  void output(const Tensor& value, const std::string& name);

  GraphIR& ir() { return *ir_; }
  const GraphIR& ir() const { return *ir_; }
  const std::shared_ptr<GraphIR>& shared() const { return ir_; }
  const GraphOptions& options() const { return ir_->opt; }
  const Value& value(const Tensor& t) const;
  std::string str() const { return ir_->str(); }

 private:
  std::shared_ptr<GraphIR> ir_;
};

// Nodes recorded while a StreamScope is alive run on stream `s` (0 = the main stream; HRNet puts
// resolution branch b on stream b). On the CPU streams only shape the memory plan; on CUDA each
// is a cudaStream_t. Eager calls ignore it.
class StreamScope {
 public:
  explicit StreamScope(int s);
  ~StreamScope();
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  int prev_;
};
int recording_stream();

// A node that computes nothing and marks a point of a run: "start" (defines the inputs) and "end"
// (uses the outputs and gradients, joining every stream).
OpPtr marker_op(const char* name);

// The graph an op on `inputs` records into: that of its symbolic inputs (all must belong to one
// graph), or nullptr when none is symbolic (eager execution).
GraphIR* recording_graph(const std::vector<Tensor>& inputs, const char* op);
// Appends a node of `op` to `g` (apply()'s recording half): non-symbolic inputs become
// parameters; returns one symbolic tensor per output (undefined where absent).
std::vector<Tensor> record(GraphIR& g, const OpPtr& op, const std::vector<Tensor>& inputs,
                           const std::vector<Meta>& out);

}  // namespace hr::graph
