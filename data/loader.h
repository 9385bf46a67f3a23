// The pose dataset and its multithreaded loader: worker threads decode images and build samples
// ahead of the training loop (a bounded prefetch queue); the order and the augmentation of every
// sample depend only on (seed, epoch, index), never on timing or the number of workers.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/pose.h"
#include "engine/tensor.h"

namespace hr::data {

struct PoseDatasetOptions {
  AugmentParams aug;
  TargetParams target;
  bool skip_corrupt = true;  // a sample whose image cannot be read: skip and count, or throw
};

class PoseDataset {
 public:
  PoseDataset(std::vector<PoseRecord> records, PoseDatasetOptions opt);
  size_t size() const { return records_.size(); }
  const PoseRecord& record(size_t i) const { return records_[i]; }
  const PoseDatasetOptions& options() const { return opt_; }
  // Builds sample i into the given buffers (see make_sample). Throws hr::Error naming the image.
  void load(size_t i, uint64_t sample_seed, float* input, float* target, float* weight,
            CropMeta* meta) const;

 private:
  std::vector<PoseRecord> records_;
  PoseDatasetOptions opt_;
};

struct Batch {
  Tensor input;   // f32 [N,3,H,W] (host)
  Tensor target;  // f32 [N,J,h,w]
  Tensor weight;  // f32 [N,J,1]
  std::vector<size_t> indices;  // dataset positions
  std::vector<CropMeta> meta;
  int skipped = 0;  // corrupt samples left out of this batch (skip_corrupt)
  std::vector<std::string> errors;  // their one-line reasons
  int64_t size() const { return static_cast<int64_t>(indices.size()); }
};

struct LoaderOptions {
  int batch_size = 32;
  bool shuffle = true;
  bool drop_last = true;
  int workers = 0;   // 0: hardware threads
  int prefetch = 2;  // batches built ahead
  uint64_t seed = 0;
};

// The order of epoch `epoch`: 0..n-1, shuffled by Fisher-Yates over an mt19937_64 stream seeded
// from (seed, epoch) when `shuffle`.
std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch, bool shuffle);
// The RNG seed of dataset item `index` in epoch `epoch` (a splitmix64 hash of the three), so a
// sample's augmentation depends on neither the worker that builds it nor the batch it lands in.
uint64_t sample_seed(uint64_t seed, int64_t epoch, size_t index);

class DataLoader {
 public:
  DataLoader(const PoseDataset& ds, LoaderOptions opt);
  ~DataLoader();
  int64_t batches_per_epoch() const;
  // Starts epoch `epoch` (permutation and sample seeds drawn from seed and epoch); batches are
  // then taken in order with next() until it returns false.
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  bool next(Batch& out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hr::data
