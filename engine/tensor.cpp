// Tensor, Storage and the copies between devices, dtypes and memory formats.
#include "engine/tensor.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>

#include "engine/autograd.h"
#include "engine/cuda_dtype.h"
#include "engine/stream.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"

namespace hr {

namespace {
thread_local cuda::Stream g_stream = nullptr;
constexpr size_t kHugePage = size_t(2) << 20;

cuda::DT to_dt(DType t) { return cuda_dtype(t, "tensor copy"); }
}  // namespace

cuda::Stream current_stream() { return g_stream ? g_stream : cuda::default_stream(); }
void set_current_stream(cuda::Stream s) { g_stream = s; }
StreamGuard::StreamGuard(cuda::Stream s) : prev_(g_stream) { g_stream = s; }
StreamGuard::~StreamGuard() { g_stream = prev_; }

// ---------------------------------------------------------------- Storage
Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (device.is_cpu()) {
    // Buffers of 4 MB and more (activations, a graph's arena) on 2 MB boundaries, offered to
    // the kernel as transparent huge pages: fewer TLB misses in the kernels' passes over them,
    // and 512 times fewer page faults where a buffer is new (eager runs). W32 pose, batch 8, 2
    // cores: the eager training step 8-11% faster, the graph's 2-15%.
    const bool huge = nbytes >= 2 * kHugePage;
    const size_t align = huge ? kHugePage : 64;
    const size_t rounded = (nbytes + align - 1) / align * align;
    data_ = rounded ? std::aligned_alloc(align, rounded) : nullptr;
    HR_CHECK(data_ || rounded == 0, "out of host memory allocating ", nbytes, " bytes");
#ifdef MADV_HUGEPAGE
    if (huge) ::madvise(data_, rounded, MADV_HUGEPAGE);  // advice only: failure changes nothing
#endif
  } else {
    cuda::Stream s = current_stream();
    data_ = nbytes ? cuda::alloc(nbytes, s) : nullptr;
    release_ = [s](void* p) { cuda::free(p, s); };
  }
}

Storage::Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> release)
    : data_(data), nbytes_(nbytes), device_(device), release_(std::move(release)) {}

Storage::~Storage() {
  if (!data_) return;
  if (release_) {
    try {
      release_(data_);
    } catch (...) {
    }
  } else {
    std::free(data_);
  }
}

// ---------------------------------------------------------------- helpers
// Element counts, strides and byte sizes are products of user-given dimensions (configs,
// checkpoint headers): each multiplication is checked, so a shape whose size overflows int64 is
// an error naming it instead of a wrapped (undefined) value.
namespace {
int64_t checked_mul(int64_t a, int64_t b, const Shape& shape, const char* what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    throw Error(str_cat("tensor: the ", what, " of shape ", shape_str(shape),
                        " overflows int64"));
  return r;
}
}  // namespace

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    if (d == 0) return 0;  // no elements whatever the other dimensions are
  for (int64_t d : shape) n = checked_mul(n, d, shape, "element count");
  return n;
}

Shape make_strides(const Shape& shape, MemoryFormat fmt) {
  Shape st(shape.size());
  if (fmt == MemoryFormat::ChannelsLast && shape.size() == 4) {
    const int64_t C = shape[1], H = shape[2], W = shape[3];
    const int64_t WC = checked_mul(W, C, shape, "stride");
    st = {checked_mul(H, WC, shape, "stride"), 1, WC, C};
    return st;
  }
  int64_t s = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    st[i] = s;
    if (i > 0) s = checked_mul(s, shape[i], shape, "stride");
  }
  return st;
}

static Tensor make_tensor(const Shape& shape, DType dtype, Device device, MemoryFormat fmt) {
  for (int64_t d : shape) HR_CHECK(d >= 0, "tensor: negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->strides = make_strides(shape, fmt);
  impl->dtype = dtype;
  const int64_t nbytes =
      checked_mul(shape_numel(shape), static_cast<int64_t>(dtype_size(dtype)), shape, "byte size");
  HR_CHECK(nbytes <= INT64_MAX - 64, "tensor: the byte size of shape ", shape_str(shape),
           " overflows int64");
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(nbytes), device);
  return Tensor(impl);
}

Tensor Tensor::from_blob(void* data, const Shape& shape, const Shape& strides, DType dtype,
                         Device device, std::function<void(void*)> release) {
  HR_CHECK(shape.size() == strides.size(), "from_blob: ", shape.size(), " dimensions but ",
           strides.size(), " strides");
  int64_t extent = 1;  // elements spanned
  for (size_t d = 0; d < shape.size(); ++d) {
    HR_CHECK(shape[d] >= 0 && strides[d] >= 0, "from_blob: shape ", shape_str(shape),
             " with strides ", shape_str(strides), " (negative values are not supported)");
    if (shape[d] == 0) extent = 0;
    if (extent) extent += (shape[d] - 1) * strides[d];
  }
  HR_CHECK(data || extent == 0, "from_blob: null data for shape ", shape_str(shape));
  if (!release) release = [](void*) {};  // never the allocator: the memory is not ours
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->strides = strides;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(
      data, static_cast<size_t>(extent) * dtype_size(dtype), device, std::move(release));
  return Tensor(impl);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device, MemoryFormat fmt) {
  return make_tensor(shape, dtype, device, fmt);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device, MemoryFormat fmt) {
  Tensor t = make_tensor(shape, dtype, device, fmt);
  if (t.nbytes() == 0) return t;  // no storage to clear (memset of a null pointer is UB)
  if (device.is_cpu())
    std::memset(t.raw_data(), 0, t.nbytes());
  else
    cuda::memset_zero(t.raw_data(), t.nbytes(), current_stream());
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape, DType dtype,
                           Device device) {
  HR_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ",
           values.size(), " values for shape ", shape_str(shape));
  Tensor host = make_tensor(shape, DType::f32, Device::cpu(), MemoryFormat::Contiguous);
  if (!values.empty()) std::memcpy(host.raw_data(), values.data(), values.size() * sizeof(float));
  if (dtype != DType::f32) host = host.to(dtype);
  return device.is_cpu() ? host : host.to(device);
}

Tensor Tensor::from_vector_i64(const std::vector<int64_t>& values, const Shape& shape,
                               Device device) {
  HR_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector_i64: ",
           values.size(), " values for shape ", shape_str(shape));
  Tensor host = make_tensor(shape, DType::i64, Device::cpu(), MemoryFormat::Contiguous);
  if (!values.empty()) std::memcpy(host.raw_data(), values.data(), values.size() * 8);
  return device.is_cpu() ? host : host.to(device);
}

Tensor Tensor::randn(const Shape& shape, uint64_t seed, float stddev, DType dtype, Device device) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.f, stddev);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (auto& x : v) x = d(rng);
  return from_vector(v, shape, dtype, device);
}

// ---------------------------------------------------------------- properties
const Shape& Tensor::shape() const {
  HR_CHECK(impl_, "tensor: use of an undefined tensor");
  return impl_->shape;
}
const Shape& Tensor::strides() const { return impl_->strides; }
int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  if (d < 0) d += n;
  HR_CHECK(d >= 0 && d < n, "tensor: dimension ", d, " out of range for shape ", shape_str(shape()));
  return impl_->shape[d];
}
int64_t Tensor::numel() const { return shape_numel(shape()); }
DType Tensor::dtype() const { return impl_->dtype; }
Device Tensor::device() const {
  return impl_->storage ? impl_->storage->device() : impl_->sym_device;
}
bool Tensor::is_symbolic() const { return impl_ && impl_->graph != nullptr; }
int64_t Tensor::storage_offset() const { return impl_->offset; }
const std::shared_ptr<Storage>& Tensor::storage() const { return impl_->storage; }

void* Tensor::raw_data() const {
  HR_CHECK(impl_, "tensor: use of an undefined tensor");
  HR_CHECK(impl_->storage, "tensor: ", str(), " is a value of a graph being recorded and has no "
           "data; compile the graph and read its outputs");
  return static_cast<char*>(impl_->storage->data()) + impl_->offset * dtype_size(impl_->dtype);
}

bool Tensor::is_contiguous(MemoryFormat fmt) const {
  const Shape& sh = shape();
  Shape want = make_strides(sh, fmt);
  if (fmt == MemoryFormat::ChannelsLast && sh.size() != 4) return false;
  for (size_t i = 0; i < sh.size(); ++i)
    if (sh[i] != 1 && impl_->strides[i] != want[i]) return false;
  return true;
}

MemoryFormat Tensor::suggest_format() const {
  if (dim() == 4 && is_contiguous(MemoryFormat::ChannelsLast) &&
      !is_contiguous(MemoryFormat::Contiguous))
    return MemoryFormat::ChannelsLast;
  return MemoryFormat::Contiguous;
}

std::string Tensor::str() const {
  if (!impl_) return "undefined";
  return str_cat(dtype_name(dtype()), shape_str(shape()), " ", device().str(),
                 is_symbolic() ? " (graph value)" : "");
}

// ---------------------------------------------------------------- copies
namespace {

// Generic strided copy on the host, same dtype (element size `es`).
void host_strided_copy(const Tensor& src, Tensor& dst) {
  const Shape& sh = src.shape();
  const size_t es = dtype_size(src.dtype());
  const int64_t n = shape_numel(sh);
  if (n == 0) return;
  const int nd = static_cast<int>(sh.size());
  const char* s = static_cast<const char*>(src.raw_data());
  char* d = static_cast<char*>(dst.raw_data());
  if (src.strides() == dst.strides() && src.is_contiguous(src.suggest_format())) {
    std::memcpy(d, s, n * es);
    return;
  }
  std::vector<int64_t> idx(nd, 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t so = 0, doff = 0;
    for (int k = 0; k < nd; ++k) {
      so += idx[k] * src.strides()[k];
      doff += idx[k] * dst.strides()[k];
    }
    std::memcpy(d + doff * es, s + so * es, es);
    for (int k = nd - 1; k >= 0; --k) {
      if (++idx[k] < sh[k]) break;
      idx[k] = 0;
    }
  }
}

void host_convert(int64_t n, DType from, const void* x, DType to, void* y) {
  if (from == to) {
    std::memcpy(y, x, n * dtype_size(from));
    return;
  }
  // Route everything through f32.
  std::vector<float> tmp;
  const float* f;
  if (from == DType::f32) {
    f = static_cast<const float*>(x);
  } else {
    tmp.resize(n);
    auto* t = tmp.data();
    switch (from) {
      case DType::bf16: cpu::bf16_to_f32(n, static_cast<const uint16_t*>(x), t); break;
      case DType::f16: cpu::f16_to_f32(n, static_cast<const uint16_t*>(x), t); break;
      case DType::i64:
        for (int64_t i = 0; i < n; ++i) t[i] = static_cast<float>(static_cast<const int64_t*>(x)[i]);
        break;
      case DType::u8:
        for (int64_t i = 0; i < n; ++i) t[i] = static_cast<const uint8_t*>(x)[i];
        break;
      default: break;
    }
    f = t;
  }
  switch (to) {
    case DType::f32: std::memcpy(y, f, n * 4); break;
    case DType::bf16: cpu::f32_to_bf16(n, f, static_cast<uint16_t*>(y)); break;
    case DType::f16: cpu::f32_to_f16(n, f, static_cast<uint16_t*>(y)); break;
    case DType::i64:
      for (int64_t i = 0; i < n; ++i) static_cast<int64_t*>(y)[i] = static_cast<int64_t>(f[i]);
      break;
    case DType::u8:
      for (int64_t i = 0; i < n; ++i) static_cast<uint8_t*>(y)[i] = static_cast<uint8_t>(f[i]);
      break;
  }
}

bool is_nchw_nhwc_pair(const Tensor& a, const Tensor& b) {
  return a.dim() == 4 &&
         ((a.is_contiguous() && b.is_contiguous(MemoryFormat::ChannelsLast)) ||
          (a.is_contiguous(MemoryFormat::ChannelsLast) && b.is_contiguous()));
}

}  // namespace

void Tensor::copy_(const Tensor& src) {
  HR_CHECK(src.shape() == shape(), "copy_: source shape ", shape_str(src.shape()),
           " does not match destination ", shape_str(shape()));
  if (numel() == 0) return;
  Tensor s = src;
  // 1. Move to the destination device in the source's own dense format and dtype.
  if (s.device() != device()) {
    MemoryFormat f = s.suggest_format();
    s = s.contiguous(f);
    Tensor moved = make_tensor(s.shape(), s.dtype(), device(), f);
    if (device().is_cuda() && s.device().is_cpu())
      cuda::memcpy_h2d(moved.raw_data(), s.raw_data(), s.nbytes(), current_stream());
    else if (device().is_cpu() && s.device().is_cuda())
      cuda::memcpy_d2h(moved.raw_data(), s.raw_data(), s.nbytes(), current_stream());
    else
      cuda::memcpy_d2d(moved.raw_data(), s.raw_data(), s.nbytes(), current_stream());
    s = moved;
  }
  // 2. Convert the dtype on the destination device.
  if (s.dtype() != dtype()) {
    MemoryFormat f = s.suggest_format();
    s = s.contiguous(f);
    Tensor conv = make_tensor(s.shape(), dtype(), device(), f);
    if (device().is_cpu())
      host_convert(s.numel(), s.dtype(), s.raw_data(), dtype(), conv.raw_data());
    else
      cuda::convert(s.numel(), to_dt(s.dtype()), s.raw_data(), to_dt(dtype()), conv.raw_data(),
                    current_stream());
    s = conv;
  }
  // 3. Lay out into the destination's strides.
  if (device().is_cpu()) {
    host_strided_copy(s, *this);
    return;
  }
  const size_t es = dtype_size(dtype());
  if (s.strides() == strides() ||
      (s.is_contiguous(s.suggest_format()) && is_contiguous(s.suggest_format()))) {
    cuda::memcpy_d2d(raw_data(), s.raw_data(), nbytes(), current_stream());
  } else if (is_nchw_nhwc_pair(s, *this)) {
    HR_CHECK(es == 2 || es == 4, "copy_: CUDA layout change of ", dtype_name(dtype()));
    const int64_t N = size(0), C = size(1), HW = size(2) * size(3);
    if (s.is_contiguous())
      cuda::nchw_to_nhwc(to_dt(dtype()), N, C, HW, s.raw_data(), raw_data(), current_stream());
    else
      cuda::nhwc_to_nchw(to_dt(dtype()), N, C, HW, s.raw_data(), raw_data(), current_stream());
  } else {
    // Arbitrary strides on the GPU: go through the host (rare; never on a hot path).
    Tensor h = make_tensor(s.shape(), s.dtype(), Device::cpu(), MemoryFormat::Contiguous);
    h.copy_(s);
    Tensor hd = make_tensor(shape(), dtype(), Device::cpu(), MemoryFormat::Contiguous);
    hd.impl_->strides = strides();
    host_strided_copy(h, hd);
    HR_CHECK(is_contiguous(suggest_format()), "copy_: unsupported CUDA destination strides");
    cuda::memcpy_h2d(raw_data(), hd.raw_data(), nbytes(), current_stream());
  }
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor t = make_tensor(shape(), dtype(), device, suggest_format());
  t.copy_(*this);
  return t;
}

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  Tensor t = make_tensor(shape(), dt, device(), suggest_format());
  t.copy_(*this);
  return t;
}

Tensor Tensor::contiguous(MemoryFormat fmt) const {
  if (is_contiguous(fmt)) return *this;
  Tensor t = make_tensor(shape(), dtype(), device(), fmt);
  t.copy_(*this);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = make_tensor(shape(), dtype(), device(), suggest_format());
  t.copy_(*this);
  return t;
}

void Tensor::fill_(float value) {
  HR_CHECK(is_contiguous(suggest_format()), "fill_: tensor is not dense");
  const int64_t n = numel();
  if (device().is_cuda()) {
    cuda::fill(to_dt(dtype()), n, value, raw_data(), current_stream());
    return;
  }
  switch (dtype()) {
    case DType::f32: cpu::fill(n, value, data<float>()); break;
    case DType::i64:
      for (int64_t i = 0; i < n; ++i) data<int64_t>()[i] = static_cast<int64_t>(value);
      break;
    case DType::u8: std::memset(raw_data(), static_cast<uint8_t>(value), n); break;
    default: {
      uint16_t h;
      if (dtype() == DType::bf16)
        cpu::f32_to_bf16(1, &value, &h);
      else
        cpu::f32_to_f16(1, &value, &h);
      for (int64_t i = 0; i < n; ++i) data<uint16_t>()[i] = h;
    }
  }
}

Tensor Tensor::view(const Shape& new_shape) const {
  HR_CHECK(is_contiguous(), "view: tensor ", str(), " is not contiguous");
  HR_CHECK(shape_numel(new_shape) == numel(), "view: cannot view ", shape_str(shape()), " as ",
           shape_str(new_shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  impl->shape = new_shape;
  impl->strides = make_strides(new_shape, MemoryFormat::Contiguous);
  impl->dtype = impl_->dtype;
  return Tensor(impl);
}

std::vector<float> Tensor::to_vector() const {
  Tensor h = make_tensor(shape(), DType::f32, Device::cpu(), MemoryFormat::Contiguous);
  h.copy_(*this);
  const float* p = h.data<float>();
  return std::vector<float>(p, p + h.numel());
}

std::vector<int64_t> Tensor::to_vector_i64() const {
  Tensor h = make_tensor(shape(), DType::i64, Device::cpu(), MemoryFormat::Contiguous);
  h.copy_(*this);
  const int64_t* p = h.data<int64_t>();
  return std::vector<int64_t>(p, p + h.numel());
}

float Tensor::item() const {
  HR_CHECK(numel() == 1, "item: tensor ", str(), " has ", numel(), " elements, expected 1");
  return to_vector()[0];
}

// ---------------------------------------------------------------- autograd fields
bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool r) {
  HR_CHECK(!r || is_floating(dtype()), "set_requires_grad: ", str(), " is not floating point");
  HR_CHECK(!impl_->grad_fn, "set_requires_grad: only leaf tensors can be changed");
  impl_->requires_grad = r;
  return *this;
}

const Tensor& Tensor::grad() const { return impl_->grad; }
void Tensor::set_grad(const Tensor& g) { impl_->grad = g; }
void Tensor::zero_grad() { impl_->grad = Tensor(); }
const std::shared_ptr<Node>& Tensor::grad_fn() const { return impl_->grad_fn; }

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  impl->shape = impl_->shape;
  impl->strides = impl_->strides;
  impl->dtype = impl_->dtype;
  impl->graph = impl_->graph;
  impl->value = impl_->value;
  impl->sym_device = impl_->sym_device;
  return Tensor(impl);
}

void Tensor::backward(const Tensor& grad) const {
  Tensor seed = grad;
  if (!seed.defined()) {
    HR_CHECK(numel() == 1, "backward: implicit gradient needs a one-element tensor, got ", str());
    seed = Tensor::full(shape(), 1.f, dtype(), device());
  }
  run_backward({*this}, {seed});
}

}  // namespace hr
