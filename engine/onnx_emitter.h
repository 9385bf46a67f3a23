// ONNX export, the part every op sees. OpDef::to_onnx (engine/op.h) writes the op's ONNX
// translation through OnnxEmitter, which names values and adds nodes and constant initializers
// without any protobuf type. The protobuf implementation and the graph walker are
// engine/export/onnx.{h,cpp} (built when CMake's HR_ONNX finds ONNX and Protobuf).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/op.h"

namespace hr {

// An attribute of an ONNX node: an int, a float, a string, or a list of ints or floats.
struct OnnxAttr {
  enum class Kind { Int, Float, String, Ints, Floats };
  std::string name;
  Kind kind = Kind::Int;
  int64_t i = 0;
  float f = 0;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<float> floats;

  static OnnxAttr integer(std::string n, int64_t v) {
    OnnxAttr a;
    a.name = std::move(n), a.kind = Kind::Int, a.i = v;
    return a;
  }
  static OnnxAttr real(std::string n, float v) {
    OnnxAttr a;
    a.name = std::move(n), a.kind = Kind::Float, a.f = v;
    return a;
  }
  static OnnxAttr string(std::string n, std::string v) {
    OnnxAttr a;
    a.name = std::move(n), a.kind = Kind::String, a.s = std::move(v);
    return a;
  }
  static OnnxAttr integers(std::string n, std::vector<int64_t> v) {
    OnnxAttr a;
    a.name = std::move(n), a.kind = Kind::Ints, a.ints = std::move(v);
    return a;
  }
  static OnnxAttr reals(std::string n, std::vector<float> v) {
    OnnxAttr a;
    a.name = std::move(n), a.kind = Kind::Floats, a.floats = std::move(v);
    return a;
  }
};

// ONNX's element type (TensorProto.DataType) of a dtype: FLOAT 1, FLOAT16 10, BFLOAT16 16,
// INT64 7, UINT8 2; BOOL is 9.
inline int onnx_elem_type(DType t) {
  switch (t) {
    case DType::f32:
      return 1;
    case DType::f16:
      return 10;
    case DType::bf16:
      return 16;
    case DType::i64:
      return 7;
    case DType::u8:
      return 2;
  }
  return 0;
}
inline constexpr int kOnnxBool = 9;

// What an op's translation is given: its operands' and outputs' value names ("" where an optional
// operand is absent or where an output is not used by the exported graph) with their metas as
// recorded, and whether its values carry the batch dimension, which is dynamic in the exported
// model (dim 0 of the recorded shapes is then only the recording's batch: a constant that holds
// a shape must not bake it in).
struct OnnxNode {
  const std::vector<std::string>& in;
  const std::vector<Meta>& in_meta;
  const std::vector<std::string>& out;
  const std::vector<Meta>& out_meta;
  bool batched = false;
};

class OnnxEmitter {
 public:
  virtual ~OnnxEmitter() = default;
  // Appends a node of the default ONNX domain: `type` reads `inputs` ("" for an absent optional
  // input) and writes `outputs` ("" for an optional output left out).
  virtual void node(const std::string& type, const std::vector<std::string>& inputs,
                    const std::vector<std::string>& outputs,
                    const std::vector<OnnxAttr>& attrs = {}) = 0;
  // A value name not used yet, made from `hint` ("<hint>_<n>").
  virtual std::string fresh(const std::string& hint) = 0;
  // The value name `want` when it is not used yet, else "<want>.<n>" (a model output's name).
  virtual std::string claim(const std::string& want) = 0;
  // A constant initializer holding `t` (any device and layout: stored in logical order), named
  // from `hint` ("onnx::<hint>_<n>", apart from the model's parameter names); returns its name.
  virtual std::string constant(const Tensor& t, const std::string& hint) = 0;
  // The opset the model is written for.
  virtual int64_t opset() const = 0;

  // One node with one output, named from `hint` (the op type when empty); returns the output.
  std::string op(const std::string& type, const std::vector<std::string>& inputs,
                 const std::vector<OnnxAttr>& attrs = {}, const std::string& hint = "") {
    std::string out = fresh(hint.empty() ? type : hint);
    node(type, inputs, {out}, attrs);
    return out;
  }
  // int64 and float constants: 1-D of the values, or of `shape` when given ({} : a scalar).
  std::string ints(const std::vector<int64_t>& v, const std::string& hint = "ints") {
    return constant(Tensor::from_vector_i64(v, {static_cast<int64_t>(v.size())}), hint);
  }
  std::string int_scalar(int64_t v, const std::string& hint = "int") {
    return constant(Tensor::from_vector_i64({v}, {}), hint);
  }
  std::string floats(const std::vector<float>& v, const Shape& shape,
                     const std::string& hint = "floats") {
    return constant(Tensor::from_vector(v, shape), hint);
  }
  std::string float_scalar(float v, const std::string& hint = "float") {
    return constant(Tensor::from_vector({v}, {}), hint);
  }
};

}  // namespace hr
