// Datasets as the loader and the trainer see them, whatever the task: a sample is a set of named
// fixed-shape fields, the model's input first ("input" [3,H,W]); the pose dataset adds "target"
// [J,h,w] and "weight" [J,1], a segmentation dataset would add "labels", and so on.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace hr::data {

struct Field {
  std::string name;
  Shape shape;  // of one sample
  DType dtype = DType::f32;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  // The fields of a sample, the model's input first.
  virtual std::vector<Field> fields() const = 0;
  // Builds sample i into one dense buffer per field (fields() order), drawing its augmentation
  // from `seed` alone. Throws hr::Error naming the source (file, annotation) on bad data.
  virtual void load(size_t i, uint64_t seed, const std::vector<void*>& out) const = 0;
  // A sample that cannot be built is skipped and counted (true) or an error (false).
  virtual bool skip_corrupt() const { return true; }

  // Raw input (optional): for a device that normalises the input itself, after an upload of a
  // quarter of the bytes. input_lut() is the table load() normalises the input [3, H, W] with,
  // [3][256] fp32 (channel c's value for byte v); nullptr when the dataset has no raw input.
  // load_raw() builds the same sample with the input as the bytes that table reads, u8
  // [H, W * 3] RGB interleaved (raw_fields()); the other fields as load() writes them.
  // ops::normalize_u8 of the raw input with the table equals load()'s input bit for bit.
  virtual const float* input_lut() const { return nullptr; }
  virtual void load_raw(size_t i, uint64_t seed, const std::vector<void*>& out) const;
  // The raw input is an image padded to the input's size, its valid region given per sample:
  // raw_fields() then ends with "input_size" i64 [2] ({h, w}, which load_raw() writes), and the
  // input outside that region is 0 (ops::normalize_u8 with the sizes).
  virtual bool raw_input_sized() const { return false; }
};

// fields() with the input as load_raw() writes it: u8 [H, W * 3] for [3, H, W], and
// "input_size" i64 [2] last when the dataset's raw input is sized.
std::vector<Field> raw_fields(const Dataset& ds);
constexpr const char* kInputSizeField = "input_size";

// Samples [begin, end) of another dataset (which must outlive it), as samples 0..end-begin-1
// (a data-parallel job's part of a validation split).
class DatasetRange : public Dataset {
 public:
  DatasetRange(const Dataset& base, size_t begin, size_t end)
      : base_(base), begin_(begin), end_(end < begin ? begin : end) {}
  size_t size() const override { return end_ - begin_; }
  std::vector<Field> fields() const override { return base_.fields(); }
  void load(size_t i, uint64_t seed, const std::vector<void*>& out) const override {
    base_.load(begin_ + i, seed, out);
  }
  bool skip_corrupt() const override { return base_.skip_corrupt(); }
  const float* input_lut() const override { return base_.input_lut(); }
  void load_raw(size_t i, uint64_t seed, const std::vector<void*>& out) const override {
    base_.load_raw(begin_ + i, seed, out);
  }
  bool raw_input_sized() const override { return base_.raw_input_sized(); }
  size_t begin() const { return begin_; }

 private:
  const Dataset& base_;
  size_t begin_, end_;
};

// Samples stacked along a new first dimension, one host tensor per field.
struct Batch {
  std::vector<std::pair<std::string, Tensor>> fields;  // fields() order: [n, ...]
  std::vector<size_t> indices;      // dataset positions
  // The dataset's input table when the input is raw (u8 [n, H, W * 3], a loader with
  // raw_input): f32 [3, 256] on the CPU, the same tensor for every batch of a loader.
  Tensor input_lut;
  int skipped = 0;                  // corrupt samples left out of this batch (skip_corrupt)
  std::vector<std::string> errors;  // their one-line reasons
  int64_t size() const { return static_cast<int64_t>(indices.size()); }
  const Tensor& input() const;
  const Tensor& operator[](const std::string& name) const;  // throws naming the field
};

}  // namespace hr::data
