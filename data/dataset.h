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
};

// Samples stacked along a new first dimension, one host tensor per field.
struct Batch {
  std::vector<std::pair<std::string, Tensor>> fields;  // fields() order: [n, ...]
  std::vector<size_t> indices;      // dataset positions
  int skipped = 0;                  // corrupt samples left out of this batch (skip_corrupt)
  std::vector<std::string> errors;  // their one-line reasons
  int64_t size() const { return static_cast<int64_t>(indices.size()); }
  const Tensor& input() const;
  const Tensor& operator[](const std::string& name) const;  // throws naming the field
};

}  // namespace hr::data
