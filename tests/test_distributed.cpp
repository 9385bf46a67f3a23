// Data-parallel pieces in one process (the jobs of several processes: test_distributed_apps):
// synchronised batch norm's kernels with two "ranks" as two threads whose sums meet in a shared
// reducer equal plain batch norm over their batches together (and, with a reducer that changes
// nothing, plain batch norm's bits); the loader's shards put together are the unsharded batches;
// the SyncBatchNormGuard reaches the ops; a lone process needs no MPI and refuses a WORLD_SIZE
// that no launcher backs.
#include <stdlib.h>

#include <condition_variable>
#include <mutex>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "data/loader.h"
#include "engine/dist.h"
#include "engine/ops.h"
#include "kernels/cpu/cpu_kernels.h"
#include "test_util.h"

using namespace hr;

namespace {

std::vector<float> randn(size_t n, uint64_t seed, float shift = 0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng) * 1.5f + shift;
  return v;
}

// Two ranks as two threads: each all_reduce call adds both threads' arrays (in rank order, as a
// two-rank MPI sum does) and hands every thread the total.
struct Exchange {
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  int64_t generation = 0;
  std::vector<double> part[2];
  void meet() {  // a barrier of two
    std::unique_lock<std::mutex> lock(mu);
    const int64_t gen = generation;
    if (++arrived == 2) {
      arrived = 0;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return generation != gen; });
    }
  }
  void reduce(int rank, double* sums, int64_t n) {
    part[rank].assign(sums, sums + n);
    meet();
    for (int64_t i = 0; i < n; ++i) sums[i] = part[0][size_t(i)] + part[1][size_t(i)];
    meet();  // both have read before the next call overwrites
  }
};
}  // namespace

TEST_CASE("sync batch norm: two ranks' halves equal batch norm of the whole batch") {
  const int64_t N = 6, C = 5, HW = 7 * 3, half = N / 2;
  const size_t Cs = static_cast<size_t>(C);
  const size_t n = size_t(N * C * HW), hn = n / 2;
  const auto x = randn(n, 1, 0.7f), res = randn(n, 2), dy = randn(n, 3);
  const auto gamma = randn(Cs, 4, 1.0f), beta = randn(Cs, 5);
  for (bool relu : {false, true}) {
    CAPTURE(relu);
    // the whole batch, plain kernels
    std::vector<float> rm(Cs, 0.1f), rv(Cs, 1.5f), y(n), sm(Cs), si(Cs);
    cpu::batchnorm_act_train_forward(N, C, HW, x.data(), gamma.data(), beta.data(), 1e-5f, 0.1f,
                                     rm.data(), rv.data(), res.data(), relu, y.data(), sm.data(),
                                     si.data());
    std::vector<float> dx(n), dres(n), dg(Cs), db(Cs);
    cpu::batchnorm_act_train_backward(N, C, HW, x.data(), y.data(), dy.data(), gamma.data(),
                                      sm.data(), si.data(), relu, dx.data(), dres.data(), dg.data(),
                                      db.data());
    // two ranks, half the batch each (samples [0,3) and [3,6): contiguous halves of [N,C,HW])
    Exchange ex;
    std::vector<float> y2(n), dx2(n), dres2(n), rm2[2], rv2[2], dg2[2], db2[2], sm2[2], si2[2];
    auto rank = [&](int r) {
      rm2[r].assign(Cs, 0.1f);
      rv2[r].assign(Cs, 1.5f);
      sm2[r].resize(Cs);
      si2[r].resize(Cs);
      dg2[r].resize(Cs);
      db2[r].resize(Cs);
      const size_t o = size_t(r) * hn;
      cpu::SumReducer red = [&ex, r](double* s, int64_t k) { ex.reduce(r, s, k); };
      cpu::batchnorm_act_train_forward_sync(half, C, HW, x.data() + o, gamma.data(), beta.data(),
                                            1e-5f, 0.1f, rm2[r].data(), rv2[r].data(),
                                            res.data() + o, relu, y2.data() + o, sm2[r].data(),
                                            si2[r].data(), red);
      cpu::batchnorm_act_train_backward_sync(half, C, HW, x.data() + o, y2.data() + o,
                                             dy.data() + o, gamma.data(), sm2[r].data(),
                                             si2[r].data(), relu, dx2.data() + o, dres2.data() + o,
                                             dg2[r].data(), db2[r].data(), red);
    };
    std::thread t1(rank, 1);
    rank(0);
    t1.join();
    for (size_t i = 0; i < n; ++i) {
      REQUIRE(y2[i] == Approx(y[i]).margin(2e-5).epsilon(2e-5));
      REQUIRE(dx2[i] == Approx(dx[i]).margin(2e-5).epsilon(2e-4));
      REQUIRE(dres2[i] == Approx(dres[i]).margin(1e-6));
    }
    for (int64_t c = 0; c < C; ++c) {
      for (int r = 0; r < 2; ++r) {  // both ranks hold the whole batch's statistics
        REQUIRE(sm2[r][size_t(c)] == Approx(sm[size_t(c)]).margin(1e-6));
        REQUIRE(si2[r][size_t(c)] == Approx(si[size_t(c)]).epsilon(1e-5));
        REQUIRE(rm2[r][size_t(c)] == Approx(rm[size_t(c)]).margin(1e-6));
        REQUIRE(rv2[r][size_t(c)] == Approx(rv[size_t(c)]).epsilon(1e-5));
      }
      // each rank's own parameter gradients; their sum is the whole batch's
      REQUIRE(dg2[0][size_t(c)] + dg2[1][size_t(c)] == Approx(dg[size_t(c)]).margin(1e-4).epsilon(1e-4));
      REQUIRE(db2[0][size_t(c)] + db2[1][size_t(c)] == Approx(db[size_t(c)]).margin(1e-4).epsilon(1e-4));
      REQUIRE(dg2[0][size_t(c)] != Approx(dg[size_t(c)]).epsilon(1e-3));
    }
  }
}

TEST_CASE("sync batch norm: one rank is plain batch norm, bit for bit") {
  const int64_t N = 3, C = 4, HW = 37;
  const size_t Cs = static_cast<size_t>(C);
  const size_t n = size_t(N * C * HW);
  const auto x = randn(n, 11, -2.f), dy = randn(n, 12);
  const auto gamma = randn(Cs, 13, 1.f), beta = randn(Cs, 14);
  std::vector<float> rm(Cs, 0.f), rv(Cs, 1.f), y(n), sm(Cs), si(Cs);
  std::vector<float> rm2 = rm, rv2 = rv, y2(n), sm2(Cs), si2(Cs);
  cpu::batchnorm_act_train_forward(N, C, HW, x.data(), gamma.data(), beta.data(), 1e-5f, 0.1f,
                                   rm.data(), rv.data(), nullptr, true, y.data(), sm.data(), si.data());
  int calls = 0;
  cpu::SumReducer same = [&calls](double*, int64_t) { ++calls; };
  cpu::batchnorm_act_train_forward_sync(N, C, HW, x.data(), gamma.data(), beta.data(), 1e-5f, 0.1f,
                                        rm2.data(), rv2.data(), nullptr, true, y2.data(), sm2.data(),
                                        si2.data(), same);
  CHECK(calls == 2);  // the sums, then the squared deviations
  CHECK(y2 == y);
  CHECK(rm2 == rm);
  CHECK(rv2 == rv);
  CHECK(si2 == si);
  std::vector<float> dx(n), dg(Cs), db(Cs), dx2(n), dg2(Cs), db2(Cs);
  cpu::batchnorm_act_train_backward(N, C, HW, x.data(), y.data(), dy.data(), gamma.data(), sm.data(),
                                    si.data(), true, dx.data(), nullptr, dg.data(), db.data());
  cpu::batchnorm_act_train_backward_sync(N, C, HW, x.data(), y.data(), dy.data(), gamma.data(),
                                         sm.data(), si.data(), true, dx2.data(), nullptr,
                                         dg2.data(), db2.data(), same);
  CHECK(calls == 3);
  CHECK(dx2 == dx);
  CHECK(dg2 == dg);
  CHECK(db2 == db);
}

TEST_CASE("SyncBatchNormGuard: training batch norms made under it are synchronised ops") {
  Tensor x = Tensor::from_vector(randn(2 * 3 * 4, 21), {2, 3, 2, 2});
  Tensor g = Tensor::ones({3}), b = Tensor::zeros({3});
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
  Tensor plain = ops::batch_norm(x, g, b, rm, rv, true);
  CHECK_FALSE(sync_batch_norm());
  Tensor synced;
  {
    SyncBatchNormGuard on(true);
    CHECK(sync_batch_norm());
    Tensor rm2 = Tensor::zeros({3}), rv2 = Tensor::ones({3});
    synced = ops::batch_norm(x, g, b, rm2, rv2, true);
  }
  CHECK_FALSE(sync_batch_norm());
  // one process: the same values (the synchronised path with nothing to add)
  CHECK(synced.to_vector() == plain.to_vector());
}

TEST_CASE("loader shards: the ranks' parts of each batch are the one-process batch") {
  // a dataset of indices: field "i" holds the sample's index
  struct Indices : data::Dataset {
    size_t size() const override { return 23; }
    std::vector<data::Field> fields() const override { return {{"i", {1}, DType::f32}}; }
    void load(size_t index, uint64_t, const std::vector<void*>& out) const override {
      *static_cast<float*>(out[0]) = float(index);
    }
  } ds;
  data::LoaderOptions o;
  o.batch_size = 6;
  o.workers = 2;
  o.seed = 9;
  data::DataLoader whole(ds, o);
  whole.start_epoch(2);
  std::vector<std::vector<float>> expect;
  for (data::Batch b; whole.next(b);) expect.push_back(b.fields[0].second.to_vector());
  REQUIRE(expect.size() == 3);
  for (int k : {2, 3}) {
    CAPTURE(k);
    std::vector<std::vector<float>> got(expect.size());
    for (int r = 0; r < k; ++r) {
      data::LoaderOptions so = o;
      so.shard_rank = r;
      so.shard_count = k;
      data::DataLoader part(ds, so);
      CHECK(part.batches_per_epoch() == 3);
      CHECK(part.shard_batch_size() == 6 / k);
      part.start_epoch(2, 1);  // resumed mid-epoch: from batch 1
      size_t at = 1;
      for (data::Batch b; part.next(b); ++at) {
        const auto v = b.fields[0].second.to_vector();
        CHECK(v.size() == size_t(6 / k));
        got[at].insert(got[at].end(), v.begin(), v.end());
      }
      CHECK(at == 3);
    }
    for (size_t b = 1; b < expect.size(); ++b) CHECK(got[b] == expect[b]);
  }
  data::LoaderOptions bad = o;
  bad.shard_count = 4;  // 6 does not split over 4
  CHECK_THROWS_WITH(data::DataLoader(ds, bad), Catch::Contains("cannot be split evenly over 4"));
}

TEST_CASE("a lone process: no MPI needed, and WORLD_SIZE without a launcher is refused") {
  // this test binary was not started by mpirun
  ::setenv("WORLD_SIZE", "4", 1);
  CHECK_THROWS_WITH(dist::init(), Catch::Contains("not started by an MPI launcher") &&
                                      Catch::Contains("mpirun -np 4"));
  ::setenv("WORLD_SIZE", "1", 1);
  ::setenv("LOCAL_RANK", "0", 1);
  const dist::World& w = dist::init();
  CHECK(w.size == 1);
  CHECK(w.rank == 0);
  CHECK_FALSE(dist::distributed());
  // collectives are no-ops with one rank
  double v[2] = {1.5, -2};
  dist::all_reduce_sum(v, 2, "test");
  CHECK(v[0] == 1.5);
  CHECK(dist::all_gather("abc", "test") == std::vector<std::string>{"abc"});
  Tensor p = Tensor::from_vector({1, 2, 3}, {3});
  p.set_requires_grad(true);
  Tensor grad = Tensor::from_vector({0.5f, 0.25f, 4}, {3});
  p.set_grad(grad);
  dist::GradientReducer red({p});
  CHECK(red.buckets() == 0);
  red.ready(0, grad);
  red.finish();
  CHECK(p.grad().to_vector() == std::vector<float>{0.5f, 0.25f, 4});
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("LOCAL_RANK");
}
