// DataLoader: worker threads claim the samples of the next `prefetch` batches one at a time, in
// epoch order, and write them straight into their batch's tensors; next() hands batches out in
// order. Sample seeds and the epoch order are pure functions of (seed, epoch, index), so batches
// are identical for any number of workers.
#include "data/loader.h"
#include "data/random.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <stdexcept>
#include <random>
#include <thread>

#include "engine/error.h"

namespace hr::data {

std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  if (!shuffle || n < 2) return order;
  // a different stream from the sample seeds: the tag keeps the two hashes apart
  std::mt19937_64 rng(
      splitmix64(splitmix64(seed ^ 0x6f726465725f7065ull) ^ static_cast<uint64_t>(epoch)));
  for (size_t i = n - 1; i > 0; --i) std::swap(order[i], order[uniform_int(rng, i + 1)]);
  return order;
}

uint64_t sample_seed(uint64_t seed, int64_t epoch, size_t index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(epoch)) ^
                    static_cast<uint64_t>(index));
}

// A programming error, not a corrupt sample (hr::Error would be skipped as one: every sample).
void Dataset::load_raw(size_t, uint64_t, const std::vector<void*>&) const {
  throw std::logic_error("dataset: load_raw() called on a dataset without a raw input");
}

std::vector<Field> raw_fields(const Dataset& ds) {
  std::vector<Field> f = ds.fields();
  HR_CHECK(!f.empty() && f[0].shape.size() == 3 && f[0].shape[0] == 3,
           "dataset: a raw input needs an input [3, H, W], got ",
           f.empty() ? std::string("no fields") : shape_str(f[0].shape));
  f[0].shape = {f[0].shape[1], f[0].shape[2] * 3};
  f[0].dtype = DType::u8;
  if (ds.raw_input_sized()) f.push_back({kInputSizeField, {2}, DType::i64});
  return f;
}

const Tensor& Batch::input() const {
  HR_CHECK(!fields.empty(), "batch: no fields");
  return fields[0].second;
}

const Tensor& Batch::operator[](const std::string& name) const {
  for (const auto& [n, t] : fields)
    if (n == name) return t;
  std::string have;
  for (const auto& [n, t] : fields) have += (have.empty() ? "" : ", ") + n;
  throw Error(str_cat("batch: no field '", name, "' (fields: ", have, ")"));
}

namespace {

// One batch being built: samples write into their slots of the batch tensors.
struct BatchState {
  size_t begin = 0, count = 0;  // positions in the epoch order
  std::vector<Tensor> fields;
  std::vector<size_t> indices;
  std::vector<char> ok;
  std::vector<std::string> errors;           // per slot, for skipped samples
  std::vector<std::exception_ptr> failures;  // per slot, for samples that must not be skipped
  size_t done = 0;
};

}  // namespace

struct DataLoader::Impl {
  const Dataset& ds;
  LoaderOptions opt;
  std::vector<Field> fields;
  std::vector<size_t> sample_bytes;  // per field
  int64_t n_batches = 0;
  size_t used = 0;  // this shard's samples per epoch that land in a batch (drop_last: no tail)
  size_t lbs = 0;   // this shard's part of a batch

  std::mutex mu;
  std::condition_variable work_cv, ready_cv;
  bool stop = false, started = false;
  uint64_t generation = 0;  // bumped by start_epoch: work of an older epoch is dropped
  int64_t epoch = 0;
  std::vector<size_t> order;
  int64_t next_deliver = 0;  // the batch next() returns
  size_t next_claim = 0;     // the epoch position of the next sample to build
  std::map<int64_t, std::shared_ptr<BatchState>> batches;
  // What a worker threw outside a sample's load() (allocating a batch's tensors: bad_alloc or
  // "out of host memory"): next() rethrows it in the calling thread; start_epoch clears it.
  std::exception_ptr fatal;
  std::vector<std::thread> threads;

  // the input raw (through load_raw): the dataset's table, f32 [3, 256]; else undefined
  Tensor input_lut;

  Impl(const Dataset& d, LoaderOptions o) : ds(d), opt(o) {
    if (opt.raw_input && ds.input_lut())
      input_lut = Tensor::from_vector(std::vector<float>(ds.input_lut(), ds.input_lut() + 768),
                                      {3, 256});
    fields = input_lut.defined() ? raw_fields(ds) : ds.fields();
    HR_CHECK(opt.batch_size > 0, "DataLoader: batch size ", opt.batch_size);
    HR_CHECK(!fields.empty(), "DataLoader: the dataset has no fields");
    for (const Field& f : fields) {
      int64_t bytes = 0;  // shape_numel throws on an overflowing shape, this on its bytes
      HR_CHECK(!__builtin_mul_overflow(shape_numel(f.shape), int64_t(dtype_size(f.dtype)), &bytes) &&
                   bytes >= 0,
               "DataLoader: field '", f.name, "' of shape ", shape_str(f.shape),
               " is too large (its byte size overflows)");
      sample_bytes.push_back(static_cast<size_t>(bytes));
    }
    opt.prefetch = std::max(opt.prefetch, 1);
    HR_CHECK(opt.shard_count >= 1 && opt.shard_rank >= 0 && opt.shard_rank < opt.shard_count,
             "DataLoader: shard ", opt.shard_rank, " of ", opt.shard_count);
    HR_CHECK(opt.shard_count == 1 || (opt.batch_size % opt.shard_count == 0 && opt.drop_last),
             "DataLoader: a batch of ", opt.batch_size, " cannot be split evenly over ",
             opt.shard_count, " ranks (the batch must be a multiple of the ranks, drop_last)");
    const size_t n = ds.size(), bs = static_cast<size_t>(opt.batch_size);
    lbs = bs / static_cast<size_t>(opt.shard_count);
    n_batches = static_cast<int64_t>(opt.drop_last ? n / bs : (n + bs - 1) / bs);
    used = opt.drop_last ? static_cast<size_t>(n_batches) * lbs : n;
    int workers =
        opt.workers > 0 ? opt.workers : static_cast<int>(std::thread::hardware_concurrency());
    workers = std::max(workers, 1);
    threads.reserve(workers);
    for (int w = 0; w < workers; ++w) threads.emplace_back([this] { worker(); });
  }

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    work_cv.notify_all();
    for (auto& t : threads) t.join();
  }

  bool claimable() const {
    return started && next_claim < used &&
           static_cast<int64_t>(next_claim / lbs) < next_deliver + opt.prefetch;
  }

  // Called with `mu` held: the state of batch b, made (tensors allocated) on first use. It
  // enters the map only when whole: an allocation that throws leaves no half-made batch.
  std::shared_ptr<BatchState> batch_state(int64_t b) {
    auto it = batches.find(b);
    if (it != batches.end()) return it->second;
    auto st = std::make_shared<BatchState>();
    st->begin = static_cast<size_t>(b) * lbs;  // in this shard's positions
    st->count = std::min(used, st->begin + lbs) - st->begin;
    // where this shard's part of batch b starts in the epoch order
    const size_t first = static_cast<size_t>(b) * static_cast<size_t>(opt.batch_size) +
                         static_cast<size_t>(opt.shard_rank) * lbs;
    const int64_t n = static_cast<int64_t>(st->count);
    for (const Field& f : fields) {
      Shape s = f.shape;
      s.insert(s.begin(), n);
      st->fields.push_back(Tensor::empty(s, f.dtype));
    }
    st->indices.assign(order.begin() + first, order.begin() + first + st->count);
    st->ok.assign(st->count, 0);
    st->errors.resize(st->count);
    st->failures.resize(st->count);
    batches.emplace(b, st);
    return st;
  }

  void worker() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      work_cv.wait(lock, [&] { return stop || (claimable() && !fatal); });
      if (stop) return;
      const size_t pos = next_claim;
      const uint64_t gen = generation;
      const int64_t ep = epoch;
      std::shared_ptr<BatchState> st;
      try {
        st = batch_state(static_cast<int64_t>(pos / lbs));
      } catch (...) {
        // nothing escapes a worker (that is std::terminate): the error goes to next()
        fatal = std::current_exception();
        ready_cv.notify_all();
        continue;
      }
      ++next_claim;
      const size_t slot = pos - st->begin;
      const size_t index = st->indices[slot];
      lock.unlock();

      bool ok = false;
      std::string error;
      std::exception_ptr failure;
      try {
        std::vector<void*> out(fields.size());
        for (size_t f = 0; f < fields.size(); ++f)
          out[f] = static_cast<char*>(st->fields[f].raw_data()) + slot * sample_bytes[f];
        if (input_lut.defined())
          ds.load_raw(index, sample_seed(opt.seed, ep, index), out);
        else
          ds.load(index, sample_seed(opt.seed, ep, index), out);
        ok = true;
      } catch (const Error& e) {
        if (ds.skip_corrupt())
          error = e.what();
        else
          failure = std::current_exception();
      } catch (...) {
        failure = std::current_exception();
      }

      lock.lock();
      if (gen != generation) continue;  // start_epoch dropped this batch meanwhile
      st->ok[slot] = ok;
      st->errors[slot] = std::move(error);
      st->failures[slot] = failure;
      if (++st->done == st->count) ready_cv.notify_all();
    }
  }

  void start(int64_t ep, int64_t first_batch) {
    HR_CHECK(first_batch >= 0 && first_batch <= n_batches, "DataLoader::start_epoch: first batch ",
             first_batch, " of ", n_batches);
    std::vector<size_t> ord = epoch_order(ds.size(), opt.seed, ep, opt.shuffle);
    {
      std::lock_guard<std::mutex> lock(mu);
      ++generation;
      fatal = nullptr;
      batches.clear();  // workers still on old samples hold their own references
      order = std::move(ord);
      epoch = ep;
      next_deliver = first_batch;
      next_claim = static_cast<size_t>(first_batch) * lbs;
      started = true;
    }
    work_cv.notify_all();
  }

  bool next(Batch& out) {
    std::shared_ptr<BatchState> st;
    {
      std::unique_lock<std::mutex> lock(mu);
      HR_CHECK(started, "DataLoader::next: call start_epoch first");
      if (next_deliver >= n_batches) return false;
      const int64_t b = next_deliver;
      ready_cv.wait(lock, [&] {
        if (fatal) return true;
        auto it = batches.find(b);
        return it != batches.end() && it->second->done == it->second->count;
      });
      if (fatal) std::rethrow_exception(fatal);
      st = batches[b];
      batches.erase(b);
      ++next_deliver;
    }
    work_cv.notify_all();  // the window moved on
    for (const auto& f : st->failures)
      if (f) std::rethrow_exception(f);
    assemble(*st, out);
    return true;
  }

  // Moves a finished batch into `out`, leaving skipped samples out.
  void assemble(BatchState& st, Batch& out) {
    out.errors.clear();
    out.skipped = 0;
    out.fields.clear();
    out.indices.clear();
    out.input_lut = input_lut;
    for (size_t s = 0; s < st.count; ++s)
      if (!st.ok[s]) {
        ++out.skipped;
        out.errors.push_back(std::move(st.errors[s]));
      } else {
        out.indices.push_back(st.indices[s]);
      }
    const int64_t n = static_cast<int64_t>(st.count) - out.skipped;
    for (size_t f = 0; f < fields.size(); ++f) {
      if (out.skipped == 0) {
        out.fields.emplace_back(fields[f].name, st.fields[f]);
        continue;
      }
      Shape shape = fields[f].shape;
      shape.insert(shape.begin(), n);
      Tensor t = Tensor::empty(shape, fields[f].dtype);
      const size_t sz = sample_bytes[f];
      size_t k = 0;
      for (size_t s = 0; s < st.count; ++s)
        if (st.ok[s])
          std::memcpy(static_cast<char*>(t.raw_data()) + k++ * sz,
                      static_cast<const char*>(st.fields[f].raw_data()) + s * sz, sz);
      out.fields.emplace_back(fields[f].name, t);
    }
  }
};

DataLoader::DataLoader(const Dataset& ds, LoaderOptions opt)
    : impl_(std::make_unique<Impl>(ds, opt)) {}

DataLoader::~DataLoader() = default;

int64_t DataLoader::batches_per_epoch() const { return impl_->n_batches; }
int64_t DataLoader::shard_batch_size() const { return static_cast<int64_t>(impl_->lbs); }

void DataLoader::start_epoch(int64_t epoch, int64_t first_batch) {
  impl_->start(epoch, first_batch);
}

bool DataLoader::next(Batch& out) { return impl_->next(out); }

}  // namespace hr::data
