// ONNX export of a recorded inference graph (the hrnet_export library, built when CMake's HR_ONNX
// finds ONNX and Protobuf): the graph's batch norms folded into the convolutions before them
// (engine/graph/passes.h fold_batch_norm), the folded weights and every other parameter-only
// value computed once on the graph's device into initializers, then each remaining node written
// by its op's own OpDef::to_onnx through a protobuf OnnxEmitter. Dimension 0 of the graph's
// inputs and of every value computed from them is the batch, dynamic in the model. The model is
// checked with onnx::checker and ONNX shape inference (strict) before it is returned.
//
//   graph::Graph g;
//   Tensor y = model.forward(g.input("input", {2, 3, 256, 192}));   // model.eval() first
//   g.output(y, "heatmaps");
//   OnnxGraphOptions o;
//   o.names = ...;                                  // parameter names (Module::state_dict)
//   OnnxModel m = export_onnx_graph(g, o);
//   m.save("pose.onnx");
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/graph/graph.h"
#include "engine/onnx_emitter.h"

namespace hr {

// A graph input or output of the model: its element type and shape, where a dimension of -1 is
// symbolic, named by `dim_params` at the same index.
struct OnnxValueInfo {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> dims;
  std::vector<std::string> dim_params;
  bool is_bool = false;     // a BOOL tensor (dtype is then ignored)
  std::string str() const;  // "name f32[batch, 17, 64, 48]"
};

struct OnnxGraphOptions {
  int64_t opset = 17;               // only 17 is supported
  std::string batch_dim = "batch";  // the name of the dynamic dimension 0
  std::string graph_name = "hrnet";
  std::string producer_version;
  std::string doc;                                            // the model's doc_string
  std::vector<std::pair<std::string, std::string>> metadata;  // metadata_props
  // Parameter names by TensorImpl (a module's state dict): parameters become initializers by
  // these names; a convolution with a batch norm folded into it keeps its weight's name for the
  // folded weight and takes "<module>.bias" for the folded bias.
  std::map<const void*, std::string> names;
  // The graph outputs in the model's order (empty: by name).
  std::vector<std::string> outputs;
  // Post-processing appended after the graph's nodes: receives the graph's outputs (names,
  // types, shapes) and returns the model's outputs (values it computed, or some of those).
  std::function<std::vector<OnnxValueInfo>(OnnxEmitter&, const std::vector<OnnxValueInfo>&)> finish;
};

struct OnnxStats {
  int64_t nodes = 0, initializers = 0, initializer_bytes = 0;
  int64_t folded = 0;                       // batch norms folded into convolutions
  std::map<std::string, int64_t> op_types;  // node count per op type
  std::vector<OnnxValueInfo> inputs, outputs;
};

// A checked ONNX model (the protobuf stays inside).
class OnnxModel {
 public:
  OnnxModel();
  ~OnnxModel();
  OnnxModel(OnnxModel&&) noexcept;
  OnnxModel& operator=(OnnxModel&&) noexcept;

  const OnnxStats& stats() const;
  // The serialized ModelProto.
  std::string serialize() const;
  // Writes the serialized model atomically (no partial file on failure); returns its bytes.
  int64_t save(const std::string& path) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  friend OnnxModel export_onnx_graph(graph::Graph& g, const OnnxGraphOptions& o);
};

// Translates a recorded graph (batch norm in inference mode; not compiled: this runs its own
// passes on it, so the graph is consumed) into a checked ONNX model. Throws hr::Error naming the
// op of a node that has no ONNX translation, and when the model fails the ONNX checker or shape
// inference.
OnnxModel export_onnx_graph(graph::Graph& g, const OnnxGraphOptions& o);

}  // namespace hr
