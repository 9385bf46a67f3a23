// Data-parallel processes over MPI (engine/dist.h).
#include "engine/dist.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "engine/error.h"
#include "engine/stream.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/nccl.h"

#ifdef HR_WITH_MPI
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1  // the C API only (MPI's deprecated C++ bindings; CMake sets them too)
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
#endif

namespace hr::dist {

namespace {

World g_world;
bool g_init = false, g_multiple = false;
[[maybe_unused]] bool g_mpi = false;  // read only by the MPI build
double g_timeout = 600;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  HR_CHECK(end && *end == '\0' && x >= 0 && x < (1 << 24), "environment: ", name, "='", v,
           "' is not a rank or a process count");
  return static_cast<int>(x);
}

std::string where() {
  return str_cat("rank ", g_world.rank, " of ", g_world.size);
}

#ifdef HR_WITH_MPI
MPI_Comm g_grad_comm = MPI_COMM_NULL;  // the gradient reducer's own communicator

// Waits for `req`, polling (briefly spinning, then sleeping, so that a waiting rank leaves the
// cores to the work), at most g_timeout seconds.
// spin: seconds polled back to back before sleeping (0 for the gradient reducer's thread, which
// shares its core with the computation).
void wait_request(MPI_Request& req, const char* what, double spin = 2e-3) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto deadline = start + std::chrono::duration<double>(g_timeout);
  // polled back to back for `spin` seconds (a collective of ranks in step is over in
  // microseconds), then with 50 us sleeps, after a second with 1 ms ones
  for (int polls = 0;; ++polls) {
    int done = 0;
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (done) return;
    if ((polls & 63) == 0) {
      const auto now = clock::now();
      if (now > deadline)
        abort_job(str_cat(what, " did not complete within ", g_timeout,
                          " s (ENGINE.DIST_TIMEOUT): another rank has died or hangs; ending the job"));
      const double waited = std::chrono::duration<double>(now - start).count();
      if (waited > spin)
        std::this_thread::sleep_for(std::chrono::microseconds(waited > 1.0 ? 1000 : 50));
    }
  }
}

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int n = 0;
  MPI_Error_string(rc, msg, &n);
  abort_job(str_cat(call, " failed: ", std::string(msg, static_cast<size_t>(n))));
}

void reduce_in_place(void* data, int64_t n, MPI_Datatype type, MPI_Op op, MPI_Comm comm,
                     const char* what, double spin = 2e-3) {
  char* p = static_cast<char*>(data);
  int size = 0;
  MPI_Type_size(type, &size);
  // MPI counts are int: large buffers go in chunks (the same on every rank)
  constexpr int64_t kChunk = int64_t(1) << 30;
  for (int64_t at = 0; at < n; at += kChunk) {
    const int count = static_cast<int>(std::min(kChunk, n - at));
    MPI_Request req;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, p + at * size, count, type, op, comm, &req),
              "MPI_Iallreduce");
    wait_request(req, what, spin);
  }
}
#endif

}  // namespace

bool built_with_mpi() {
#ifdef HR_WITH_MPI
  return true;
#else
  return false;
#endif
}

const World& world() { return g_world; }
void set_timeout(double seconds) {
  HR_CHECK(seconds > 0, "ENGINE.DIST_TIMEOUT must be positive, got ", seconds);
  g_timeout = seconds;
}
double timeout() { return g_timeout; }

const World& init() {
  if (g_init) return g_world;
  // The launcher's own variables say how many processes the job has.
  // (the local rank comes from MPI itself: the processes that share this machine)
  struct Launcher {
    const char *size, *rank, *name;
  };
  const Launcher launchers[] = {
      {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "mpirun"},
      {"PMI_SIZE", "PMI_RANK", "pmi"},
      {"SLURM_STEP_NUM_TASKS", "PMIX_RANK", "pmix"},
  };
  int size = -1;                 // -1: the launcher does not say (MPI will)
  [[maybe_unused]] const char* size_var = nullptr;  // named in the MPI build's checks
  std::string launcher;
  for (const Launcher& l : launchers) {
    const int n = std::getenv(l.rank) ? env_int(l.size, -1) : -1;
    if (n >= 1) {
      size = n;
      size_var = l.size;
      launcher = l.name;
      break;
    }
  }
  if (launcher.empty() && std::getenv("PMIX_RANK")) launcher = "pmix";
  // The RANK / WORLD_SIZE / LOCAL_RANK convention (cluster schedulers, torchrun-style scripts)
  const int conv_size = env_int("WORLD_SIZE", -1), conv_local = env_int("LOCAL_RANK", -1);
  [[maybe_unused]] const int conv_rank = env_int("RANK", -1);  // checked by the MPI build
  if (launcher.empty()) {
    HR_CHECK(conv_size <= 1,
             "WORLD_SIZE=", conv_size, " says this process is one of several, but it was not "
             "started by an MPI launcher: start the job with mpirun -np ", conv_size,
             " (or srun --mpi=pmix on Slurm)");
    g_world = World();
    g_world.local_rank = std::max(conv_local, 0);
    g_init = true;
    return g_world;
  }
#ifndef HR_WITH_MPI
  throw Error(str_cat("this process was started by ", launcher, " as one of ",
                      size > 0 ? std::to_string(size) : std::string("several"),
                      " but this build has no MPI (install Open MPI's libopenmpi-dev and "
                      "configure again)"));
#else
  int inited = 0;
  MPI_Initialized(&inited);
  int provided = MPI_THREAD_SINGLE;
  if (!inited) check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided),
                         "MPI_Init_thread");
  else MPI_Query_thread(&provided);
  g_mpi = true;
  g_multiple = provided >= MPI_THREAD_MULTIPLE;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  World w;
  w.launcher = launcher;
  MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &w.size);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &w.local_rank);
  MPI_Comm_size(local, &w.local_size);
  MPI_Comm_free(&local);
  MPI_Comm_dup(MPI_COMM_WORLD, &g_grad_comm);
  // one GPU per process: the local rank's (of CUDA_VISIBLE_DEVICES' list when set), made the
  // only one it sees, before anything touches CUDA
  if (w.size > 1) {
    const char* vis = std::getenv("CUDA_VISIBLE_DEVICES");
    std::vector<std::string> ids;
    for (std::string rest = vis ? vis : ""; !rest.empty();) {
      const size_t c = rest.find(',');
      ids.push_back(rest.substr(0, c));
      rest = c == std::string::npos ? "" : rest.substr(c + 1);
    }
    if (!vis)
      ::setenv("CUDA_VISIBLE_DEVICES", std::to_string(w.local_rank).c_str(), 1);
    else if (ids.size() > 1)
      ::setenv("CUDA_VISIBLE_DEVICES", ids[static_cast<size_t>(w.local_rank) % ids.size()].c_str(), 1);
    // A CUDA-aware MPI may have initialised CUDA inside MPI_Init, before the variable was set:
    // then it has no effect, every rank would take the first GPU and NCCL would refuse them.
    if ((!vis || ids.size() > 1) && cuda::available() && cuda::device_count() > 1)
      std::fprintf(stderr,
                   "hrnet: rank %d: warning: CUDA_VISIBLE_DEVICES came too late (CUDA was "
                   "initialised before, by the MPI library?): this rank sees %d GPUs and would "
                   "use the first; start each rank with its own CUDA_VISIBLE_DEVICES\n",
                   w.rank, cuda::device_count());
  }
  g_world = w;
  g_init = true;
  auto agree = [&](const char* what, int env, int mpi) {
    if (env >= 0 && env != mpi)
      abort_job(str_cat(what, "=", env, " in the environment, but ", launcher, " made this process ",
                        std::string(what) == "RANK" || std::string(what) == "LOCAL_RANK"
                            ? "" : "one of ", mpi,
                        ": the launcher's and the scheduler's view of the job differ"));
  };
  if (size_var) agree(size_var, size, w.size);
  agree("WORLD_SIZE", conv_size, w.size);
  agree("RANK", conv_rank, w.rank);
  agree("LOCAL_RANK", conv_local, w.local_rank);
  return g_world;
#endif
}

void finalize() {
#ifdef HR_WITH_MPI
  if (!g_mpi) return;
  int fin = 0;
  MPI_Finalized(&fin);
  if (fin) return;
  if (g_grad_comm != MPI_COMM_NULL) MPI_Comm_free(&g_grad_comm);
  MPI_Finalize();
  g_mpi = false;
#endif
}

void abort_job(const std::string& message) {
  std::fprintf(stderr, "hrnet: %s%s%s\n", g_world.size > 1 ? where().c_str() : "",
               g_world.size > 1 ? ": " : "", message.c_str());
  std::fflush(stderr);
#ifdef HR_WITH_MPI
  if (g_mpi) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
  std::_Exit(1);
}

void all_reduce_sum(float* data, int64_t n, const char* what) {
#ifdef HR_WITH_MPI
  if (g_world.size > 1) reduce_in_place(data, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, what);
#endif
}
void all_reduce_sum(double* data, int64_t n, const char* what) {
#ifdef HR_WITH_MPI
  if (g_world.size > 1) reduce_in_place(data, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, what);
#endif
}
void all_reduce_max(int64_t* data, int64_t n, const char* what) {
#ifdef HR_WITH_MPI
  if (g_world.size > 1) reduce_in_place(data, n, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD, what);
#endif
}

void broadcast(void* data, int64_t bytes, int root, const char* what) {
#ifdef HR_WITH_MPI
  if (g_world.size <= 1) return;
  char* p = static_cast<char*>(data);
  constexpr int64_t kChunk = int64_t(1) << 30;
  for (int64_t at = 0; at < bytes; at += kChunk) {
    MPI_Request req;
    check_mpi(MPI_Ibcast(p + at, static_cast<int>(std::min(kChunk, bytes - at)), MPI_BYTE, root,
                         MPI_COMM_WORLD, &req),
              "MPI_Ibcast");
    wait_request(req, what);
  }
#endif
}

std::vector<std::string> all_gather(const std::string& local, const char* what) {
  if (g_world.size <= 1) return {local};
#ifdef HR_WITH_MPI
  const int W = g_world.size;
  std::vector<int64_t> sizes(static_cast<size_t>(W), 0);
  sizes[static_cast<size_t>(g_world.rank)] = static_cast<int64_t>(local.size());
  all_reduce_max(sizes.data(), W, what);
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  HR_CHECK(total < (int64_t(1) << 31), what, ": ", total, " bytes to gather, over 2 GiB");
  std::vector<int> counts(static_cast<size_t>(W)), displs(static_cast<size_t>(W));
  for (int r = 0, at = 0; r < W; ++r) {
    counts[static_cast<size_t>(r)] = static_cast<int>(sizes[static_cast<size_t>(r)]);
    displs[static_cast<size_t>(r)] = at;
    at += counts[static_cast<size_t>(r)];
  }
  std::string all(static_cast<size_t>(total), '\0');
  MPI_Request req;
  check_mpi(MPI_Iallgatherv(local.data(), static_cast<int>(local.size()), MPI_BYTE, all.data(),
                            counts.data(), displs.data(), MPI_BYTE, MPI_COMM_WORLD, &req),
            "MPI_Iallgatherv");
  wait_request(req, what);
  std::vector<std::string> out;
  for (int r = 0; r < W; ++r)
    out.push_back(all.substr(static_cast<size_t>(displs[static_cast<size_t>(r)]),
                             static_cast<size_t>(counts[static_cast<size_t>(r)])));
  return out;
#else
  return {local};
#endif
}

void barrier(const char* what) {
#ifdef HR_WITH_MPI
  if (g_world.size <= 1) return;
  MPI_Request req;
  check_mpi(MPI_Ibarrier(MPI_COMM_WORLD, &req), "MPI_Ibarrier");
  wait_request(req, what);
#endif
}

namespace {
void* make_nccl_comm() {
  char id[cuda::kNcclIdBytes] = {};
  if (g_world.rank == 0) cuda::nccl_unique_id(id);
  broadcast(id, sizeof id, 0, "the broadcast of the NCCL id");
  return cuda::nccl_init(id, g_world.rank, g_world.size);
}
}  // namespace

void* nccl_comm() {
  static void* comm = make_nccl_comm();
  return comm;
}

void* nccl_grad_comm() {
  static void* comm = make_nccl_comm();
  return comm;
}

void all_reduce_mean_device(const float* in, float* out, int64_t n, void* stream) {
  // one rank: NCCL's one-rank communicator where there is NCCL (the path of a real job, which a
  // one-GPU machine can then test), else a copy
  if (g_world.size <= 1 && !cuda::nccl_built()) {
    if (in != out) cuda::memcpy_d2d(out, in, static_cast<size_t>(n) * sizeof(float), stream);
    return;
  }
  cuda::nccl_all_reduce_out(nccl_grad_comm(), in, out, n, cuda::DT::f32, true, stream);
}

void all_reduce_sum_device(double* data, int64_t n, void* stream) {
  if (g_world.size <= 1) return;
  cuda::nccl_all_reduce_f64(nccl_comm(), data, n, stream);
}

// ---------------------------------------------------------------------------------------------
// GradientReducer
// ---------------------------------------------------------------------------------------------
struct GradientReducer::Impl {
  struct Bucket {
    std::vector<size_t> members;
    std::vector<float> buf;
    int pending = 0;  // members not yet ready this step
    bool done = false;
  };
  std::vector<Tensor> params;
  std::vector<Bucket> buckets;
  std::vector<size_t> bucket_of;
  std::vector<int64_t> offset_of;
  std::vector<char> is_ready;
  std::vector<Tensor> grads;  // this step's gradient of each parameter
  size_t next_launch = 0;     // buckets launch in index order on every rank
  bool device = false;        // CUDA: NCCL at finish()
  bool active = false;

  // the communication thread
  std::mutex mu;
  std::condition_variable cv;
  std::deque<size_t> queue;
  bool stop = false;
  std::thread thread;

  void reduce(size_t b) {
#ifdef HR_WITH_MPI
    Bucket& k = buckets[b];
    reduce_in_place(k.buf.data(), static_cast<int64_t>(k.buf.size()), MPI_FLOAT, MPI_SUM,
                    g_grad_comm, "the gradient all-reduce", thread.joinable() ? 0.0 : 2e-3);
#else
    (void)b;
#endif
  }

  void comm_loop() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return stop || !queue.empty(); });
      if (queue.empty()) return;
      const size_t b = queue.front();
      queue.pop_front();
      lock.unlock();
      reduce(b);
      lock.lock();
      buckets[b].done = true;
      cv.notify_all();
    }
  }

  // Launches the buckets that are whole, in order.
  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
      if (thread.joinable()) {
        std::lock_guard<std::mutex> lock(mu);
        queue.push_back(next_launch);
        cv.notify_all();
      } else {
        reduce(next_launch);
        buckets[next_launch].done = true;
      }
      ++next_launch;
    }
  }

  void reset() {
    for (Bucket& k : buckets) {
      k.pending = static_cast<int>(k.members.size());
      k.done = false;
    }
    std::fill(is_ready.begin(), is_ready.end(), 0);
    std::fill(grads.begin(), grads.end(), Tensor());
    next_launch = 0;
  }
};

GradientReducer::GradientReducer(std::vector<Tensor> params, int64_t bucket_bytes, bool always)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.params = std::move(params);
  const size_t n = m.params.size();
  m.bucket_of.assign(n, 0);
  m.offset_of.assign(n, 0);
  m.is_ready.assign(n, 0);
  m.grads.assign(n, Tensor());
  m.active = world().size > 1 || always;
  if (!m.active || n == 0) return;
  m.device = m.params[0].device().is_cuda();
  for (const Tensor& p : m.params)
    HR_CHECK(p.device() == m.params[0].device() && p.dtype() == DType::f32, "gradient reducer: "
             "the parameters must be f32 on one device, got ", p.str());
  if (m.device) {
    nccl_grad_comm();  // every rank makes it now, not inside a capture
    return;
  }
  // reverse order: the backward pass finishes the last layers' gradients first
  int64_t bytes = 0;
  for (size_t j = n; j-- > 0;) {
    if (m.buckets.empty() || bytes >= bucket_bytes) {
      m.buckets.emplace_back();
      bytes = 0;
    }
    Impl::Bucket& k = m.buckets.back();
    m.bucket_of[j] = m.buckets.size() - 1;
    m.offset_of[j] = static_cast<int64_t>(k.buf.size());
    k.members.push_back(j);
    k.buf.resize(k.buf.size() + static_cast<size_t>(m.params[j].numel()));
    bytes += m.params[j].numel() * 4;
  }
  m.reset();
  if (g_multiple) m.thread = std::thread([&m] { m.comm_loop(); });
}

GradientReducer::~GradientReducer() {
  Impl& m = *impl_;
  if (!m.thread.joinable()) return;
  {
    std::unique_lock<std::mutex> lock(m.mu);
    // a step abandoned by an exception: let the queued reductions finish (every rank issues
    // them), then stop
    m.stop = true;
    m.cv.notify_all();
  }
  m.thread.join();
}

int64_t GradientReducer::buckets() const { return static_cast<int64_t>(impl_->buckets.size()); }

void GradientReducer::ready(size_t k, const Tensor& grad) {
  Impl& m = *impl_;
  if (m.buckets.empty()) return;  // one rank, or CUDA (all at finish)
  HR_CHECK(k < m.params.size(), "gradient reducer: parameter ", k, " of ", m.params.size());
  if (m.is_ready[k]) return;
  Impl::Bucket& b = m.buckets[m.bucket_of[k]];
  float* dst = b.buf.data() + m.offset_of[k];
  const int64_t n = m.params[k].numel();
  if (grad.defined()) {
    HR_CHECK(grad.device().is_cpu() && grad.dtype() == DType::f32 && grad.is_contiguous() &&
                 grad.numel() == n,
             "gradient reducer: the gradient of parameter ", k, " is ", grad.str(),
             ", expected a contiguous CPU f32 tensor of ", n, " values");
    std::memcpy(dst, grad.data<float>(), static_cast<size_t>(n) * 4);
  } else {
    std::memset(dst, 0, static_cast<size_t>(n) * 4);  // unused on this rank: adds nothing
  }
  m.grads[k] = grad;
  m.is_ready[k] = 1;
  --b.pending;
  m.launch_ready();
}

void GradientReducer::finish() {
  Impl& m = *impl_;
  if (m.device) {
    // every rank all-reduces every parameter, in the same order: a gradient this rank's loss did
    // not reach is zeros here
    std::vector<Tensor> grads;
    for (Tensor p : m.params) {
      Tensor g = p.grad();
      if (!g.defined()) {
        g = Tensor::zeros(p.shape(), DType::f32, p.device());
        p.set_grad(g);
      }
      // dense in either layout (4-D CUDA gradients are channels-last): the reduction is
      // element-wise, so only the bytes matter
      HR_CHECK(g.dtype() == DType::f32 && g.is_contiguous(g.suggest_format()),
               "gradient reducer: gradient ", g.str(), " is not a dense f32 tensor");
      grads.push_back(g);
    }
    void* comm = nccl_grad_comm();
    // the group is ended on every path: a call that throws inside it must not leave the next
    // collectives queued into a group that is never launched
    struct Group {
      bool open = true;
      Group() { cuda::nccl_group_start(); }
      void end() {
        open = false;
        cuda::nccl_group_end();
      }
      ~Group() {
        if (!open) return;
        try {
          cuda::nccl_group_end();
        } catch (...) {
        }
      }
    } group;
    for (Tensor& g : grads)
      cuda::nccl_all_reduce_out(comm, g.raw_data(), g.raw_data(), g.numel(), cuda::DT::f32, true,
                                current_stream());
    group.end();
    return;
  }
  if (m.buckets.empty()) return;
  for (size_t k = m.params.size(); k-- > 0;)
    if (!m.is_ready[k]) ready(k, m.params[k].grad());
  if (m.thread.joinable()) {
    std::unique_lock<std::mutex> lock(m.mu);
    m.cv.wait(lock, [&] {
      for (const auto& b : m.buckets)
        if (!b.done) return false;
      return true;
    });
  }
  const float scale = 1.0f / static_cast<float>(world().size);
  for (size_t j = 0; j < m.params.size(); ++j) {
    const Impl::Bucket& b = m.buckets[m.bucket_of[j]];
    const float* src = b.buf.data() + m.offset_of[j];
    Tensor g = m.grads[j];
    if (!g.defined()) {  // this rank's loss did not reach it, another's did
      g = Tensor::empty(m.params[j].shape(), DType::f32);
      Tensor p = m.params[j];
      p.set_grad(g);
    }
    float* dst = g.data<float>();
    const int64_t n = m.params[j].numel();
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i] * scale;
  }
  m.reset();
}

}  // namespace hr::dist
