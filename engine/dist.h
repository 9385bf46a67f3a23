// Data-parallel processes: who this process is among the ranks of a job, and the collectives the
// trainer and synchronised batch norm need. MPI (Open MPI) launches, bootstraps and reduces on
// the CPU; NCCL reduces CUDA tensors (kernels/cuda/nccl.h), bootstrapped through MPI.
//
// One process is the default and needs neither a launcher nor MPI at run time: MPI is started
// only when the environment says the process is one of several (Open MPI's mpirun, a PMIx / Slurm
// launch, MPICH's PMI), and then its view of the job is checked against the RANK / WORLD_SIZE /
// LOCAL_RANK convention where that is set too.
//
// Every collective is issued by every rank in the same order and waits at most timeout()
// seconds (ENGINE.DIST_TIMEOUT): a rank that died or hangs ends the whole job with one line
// naming the collective (MPI_Abort), never a silent hang.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hr::dist {

struct World {
  int rank = 0, size = 1;              // in the job
  int local_rank = 0, local_size = 1;  // on this machine (LOCAL_RANK -> the GPU)
  std::string launcher;                // "mpirun", "pmix", "slurm", "pmi"; "" alone
};

// Reads the launcher's environment and starts MPI when the job has several processes. Idempotent.
// Throws a one-line Error when the environment is inconsistent (WORLD_SIZE=4 without a launcher,
// RANK disagreeing with MPI's rank) or this build has no MPI.
const World& init();
const World& world();  // init() once done; before: one process
inline bool distributed() { return world().size > 1; }
bool built_with_mpi();
// The bound on every collective's wait, seconds (default 600).
void set_timeout(double seconds);
double timeout();

// Collectives over all ranks (no-ops with one). Blocking, bounded by timeout(); safe to call
// from any one thread at a time per kind (the gradient reducer has its own communicator).
void all_reduce_sum(float* data, int64_t n, const char* what);
void all_reduce_sum(double* data, int64_t n, const char* what);
void all_reduce_max(int64_t* data, int64_t n, const char* what);
void broadcast(void* data, int64_t bytes, int root, const char* what);
// Every rank's bytes, in rank order (variable sizes).
std::vector<std::string> all_gather(const std::string& local, const char* what);
void barrier(const char* what);
// Ends every rank of the job with `message` on this rank's standard error (a one-line error
// that cannot be thrown to the other ranks). One process: prints and exits with status 1.
[[noreturn]] void abort_job(const std::string& message);
// MPI_Finalize when MPI was started (at normal exit).
void finalize();

// n doubles on the current CUDA device summed over the ranks in place, on stream s (NCCL; with one
// rank nothing is done).
void all_reduce_sum_device(double* data, int64_t n, void* stream);

// n floats on the current CUDA device averaged over the ranks, in -> out (may be the same), on
// stream s, through the gradients' own NCCL communicator (nccl_grad_comm: never interleaved with
// synchronised batch norm's). With one rank NCCL's one-rank communicator (a copy without NCCL).
void all_reduce_mean_device(const float* in, float* out, int64_t n, void* stream);

// The job's NCCL communicator (made on first use: rank 0's unique id broadcast over MPI; with one
// rank, made alone), on the current CUDA device. Throws where the build has no NCCL.
void* nccl_comm();
void* nccl_grad_comm();  // a second one, for the gradient reduction

// The data-parallel gradient reduction: the gradients of `params` averaged over the ranks.
// CPU (MPI): in buckets of about bucket_bytes, each bucket reduced as soon as all of its
// gradients are ready (ready(k), in any order, e.g. from the graph's backward as each gradient
// completes), on a communication thread that overlaps with the rest of the backward pass;
// finish() waits for the last bucket and writes the averages back into the gradients. The
// buckets follow the reverse of the parameters' order (the order the backward produces them).
// CUDA (NCCL): finish() enqueues one group of in-place averaging all-reduces on the current
// stream and returns (capturable into the training step's CUDA graph); ready() does nothing.
// With one rank every call is free, unless `always` (tests: the NCCL path with a communicator
// of one rank).
class GradientReducer {
 public:
  explicit GradientReducer(std::vector<Tensor> params, int64_t bucket_bytes = 16 << 20,
                           bool always = false);
  ~GradientReducer();
  // The gradient of params[k] (the tensor to average in place) is final.
  void ready(size_t k, const Tensor& grad);
  // Every gradient not yet marked ready is taken as it is now (params[k].grad()); waits for all
  // buckets; the gradients then hold the averages over the ranks.
  void finish();
  int64_t buckets() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hr::dist
