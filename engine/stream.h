// The CUDA stream that engine ops launch on, per host thread. Defaults to the engine's own
// stream (hr::cuda::default_stream()); StreamGuard switches it for a scope, e.g. to run one
// HRNet branch on its own stream.
#pragma once
#include "kernels/cuda/cuda_kernels.h"

namespace hr {

cuda::Stream current_stream();
void set_current_stream(cuda::Stream s);  // nullptr = the engine's default stream

class StreamGuard {
 public:
  explicit StreamGuard(cuda::Stream s);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  cuda::Stream prev_;
};

}  // namespace hr
