// The multithreaded loader over any Dataset (data/dataset.h): worker threads build samples ahead
// of the training loop (a bounded prefetch window) straight into their batch's tensors; the order
// and the augmentation of every sample depend only on (seed, epoch, index), never on timing or
// the number of workers, so a run resumes exactly, mid-epoch included.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "data/dataset.h"

namespace hr::data {

struct LoaderOptions {
  int batch_size = 32;  // the whole batch: every shard's part together
  // Data-parallel jobs: this process builds part shard_rank of shard_count of every batch (the
  // batch size a multiple of shard_count, drop_last): the epoch order is the one every rank
  // draws, and shard r takes positions [r*b/k, (r+1)*b/k) of each batch, so the ranks together
  // see the batches one process would, whatever their number.
  int shard_rank = 0, shard_count = 1;
  bool shuffle = true;
  bool drop_last = true;
  int workers = 0;   // 0: hardware threads
  int prefetch = 2;  // batches built ahead
  uint64_t seed = 0;
  // The input as the dataset's raw bytes (Dataset::load_raw: u8 [n, H, W * 3]) with its table
  // in Batch::input_lut, for a device that normalises it (ops::normalize_u8); ignored for a
  // dataset without raw input. The CUDA trainer's choice: a quarter of the bytes to upload.
  bool raw_input = false;
};

// The order of epoch `epoch`: 0..n-1, shuffled by Fisher-Yates over an mt19937_64 stream seeded
// from (seed, epoch) when `shuffle`.
std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch, bool shuffle);
// The RNG seed of dataset item `index` in epoch `epoch` (a splitmix64 hash of the three), so a
// sample's augmentation depends on neither the worker that builds it nor the batch it lands in.
uint64_t sample_seed(uint64_t seed, int64_t epoch, size_t index);

class DataLoader {
 public:
  DataLoader(const Dataset& ds, LoaderOptions opt);
  ~DataLoader();
  int64_t batches_per_epoch() const;
  int64_t shard_batch_size() const;  // the samples of a batch this shard builds
  // Starts epoch `epoch` (permutation and sample seeds drawn from seed and epoch); batches are
  // then taken in order with next() until it returns false.
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // The next batch in order, false at the end of the epoch. What a worker thread throws (a
  // sample's load() outside skip_corrupt: hr::Error, std::bad_alloc, anything; or the batch's
  // tensors failing to allocate) is rethrown here, in the calling thread, as the same exception:
  // nothing escapes a worker (that would be std::terminate).
  bool next(Batch& out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hr::data
