// Tensor: shape, strides, dtype, device and a shared storage, plus the autograd fields.
// Logical shapes are always PyTorch's (NCHW activations, [K,C,R,S] weights). Memory format:
// CPU kernels take contiguous NCHW; CUDA kernels take channels-last (NHWC) 4-D tensors, which
// are tensors of the same logical shape with permuted strides (see docs/ARCHITECTURE.md).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/dtype.h"
#include "engine/error.h"

namespace hr {

using Shape = std::vector<int64_t>;

enum class MemoryFormat : uint8_t { Contiguous, ChannelsLast };

// Bytes on one device. CPU storage is 64-byte aligned; CUDA storage comes from the caching
// allocator and is returned to it on the stream it was allocated on.
class Storage {
 public:
  Storage(size_t nbytes, Device device);
  // Wrap memory owned elsewhere (e.g. a memory-mapped file); `release` runs on destruction.
  Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  std::function<void(void*)> release_;
};

struct Node;
struct TensorImpl;
namespace graph {
struct GraphIR;
}

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation ----
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu(),
                      MemoryFormat fmt = MemoryFormat::Contiguous);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu(),
                      MemoryFormat fmt = MemoryFormat::Contiguous);
  static Tensor full(const Shape& shape, float value, DType dtype = DType::f32,
                     Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu()) {
    return full(shape, 1.f, dtype, device);
  }
  // Copies host values (f32 -> dtype) into a new tensor on `device`.
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape,
                            DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor from_vector_i64(const std::vector<int64_t>& values, const Shape& shape,
                                Device device = Device::cpu());
  // A tensor over memory owned elsewhere (an array of another framework: the Python package's
  // DLPack and numpy inputs), with strides in elements (non-negative); nothing is copied.
  // `release` runs when the last tensor sharing the memory goes.
  static Tensor from_blob(void* data, const Shape& shape, const Shape& strides, DType dtype,
                          Device device, std::function<void(void*)> release);
  // Seeded standard-normal (scaled) values, generated on the host.
  static Tensor randn(const Shape& shape, uint64_t seed, float stddev = 1.f,
                      DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor scalar(float v, Device device = Device::cpu()) { return from_vector({v}, {}, DType::f32, device); }

  // ---- properties ----
  bool defined() const { return impl_ != nullptr; }
  // A value of a static graph being recorded (engine/graph/graph.h): it has a shape, a dtype and
  // a device but no data; ops applied to it add nodes to its graph instead of computing.
  bool is_symbolic() const;
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  int64_t storage_offset() const;  // in elements
  bool is_contiguous(MemoryFormat fmt = MemoryFormat::Contiguous) const;
  MemoryFormat suggest_format() const;  // ChannelsLast when 4-D with NHWC strides
  std::string str() const;             // "f32[2, 3] cpu"

  void* raw_data() const;  // first element
  template <class T>
  T* data() const { return static_cast<T*>(raw_data()); }
  const std::shared_ptr<Storage>& storage() const;

  // ---- copies and views (not recorded by autograd unless stated) ----
  Tensor to(Device device) const;         // same dtype and memory format
  Tensor to(DType dtype) const;           // conversion on the same device
  Tensor contiguous(MemoryFormat fmt = MemoryFormat::Contiguous) const;  // self if already so
  Tensor clone() const;                   // fresh storage, same format
  void copy_(const Tensor& src);          // same shape; any device/format/dtype pair
  void fill_(float value);
  void zero_() { fill_(0.f); }
  Tensor view(const Shape& shape) const;  // contiguous tensors only; shares storage
  std::vector<float> to_vector() const;   // host copy as f32 in logical (NCHW) order
  std::vector<int64_t> to_vector_i64() const;
  float item() const;                     // one-element tensors

  // ---- autograd ----
  bool requires_grad() const;
  Tensor& set_requires_grad(bool r);
  const Tensor& grad() const;             // undefined until a backward reaches this leaf
  void set_grad(const Tensor& g);
  void zero_grad();                       // drops the gradient
  Tensor detach() const;                  // shares storage, no history
  const std::shared_ptr<Node>& grad_fn() const;
  // Runs reverse-mode differentiation from this tensor. `grad` defaults to ones for scalars.
  void backward(const Tensor& grad = Tensor()) const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // elements
  Shape shape, strides;
  DType dtype = DType::f32;
  // autograd
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;  // null for leaves
  int output_nr = 0;
  // symbolic tensors (no storage): the graph being recorded, the value, the device
  std::shared_ptr<graph::GraphIR> graph;
  int value = -1;
  Device sym_device;
};

// Tensors by name, in a meaningful order (state dicts, checkpoints).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Row-major strides for `shape`, or NHWC strides for a 4-D shape with ChannelsLast.
Shape make_strides(const Shape& shape, MemoryFormat fmt);
int64_t shape_numel(const Shape& shape);

}  // namespace hr
