// Convolutions through cuDNN's graph API (NVIDIA's header-only cudnn-frontend, the pinned
// nvidia-cudnn-frontend wheel's headers: docs/DEPENDENCIES.md), as PyTorch reaches cuDNN: every
// engine configuration cuDNN's heuristics offer for the operation, not only the few algorithms
// of the legacy API, timed on the call's own buffers the first time a shape is seen and the
// fastest kept. kernels/cuda/conv.cpp calls it before its legacy path and falls back to that
// path for a shape the graph API does not run.
//
// Plans are restricted as the legacy search is (conv.cpp pick / precise_enough): deterministic
// ones only (a step repeats bit for bit); in f16/bf16 no FFT or Winograd engine and no
// half-precision reduction; in f32 no tensor-core (TF32) engine unless HR_ALLOW_TF32=1; no engine
// that compiles at run time; workspace within the given cap. At most kMaxTimed plans are timed,
// in the heuristics' order (PyTorch's cudnn.benchmark_limit is 10).
//
// HR_CUDNN_API=legacy turns the graph API off (then the legacy API alone runs cuDNN's side);
// HR_CUDNN_VERBOSE=1 prints each choice (the plan's name and time) to stderr.
#pragma once
#include <cudnn.h>

#include <cstddef>
#include <memory>

#include "kernels/cuda/cuda_kernels.h"

namespace hr::cuda::cudnn_graph {

constexpr int kMaxTimed = 10;

// The ops, as conv.cpp numbers them; pointers (a, b, out) are fwd (x, w, y), bwd-data
// (dy, w, dx), bwd-weight (x, dy, dw).
enum Op { kFwd = 0, kBwdData = 1, kBwdWeight = 2 };

// This build has the graph API path (the frontend's headers were found when it was configured).
bool built();
// built() and not HR_CUDNN_API=legacy (read once).
bool enabled();

struct Plan;  // the operation graph and its chosen execution plan

// The fastest plan for (op, s, dt) under the restrictions above, timed on the call's buffers on
// st (synchronises: never while capturing); nullptr when the graph API has none for it.
// h: the device's handle, its stream set to st; the caller serialises the handle's use.
std::shared_ptr<Plan> choose(int op, const kern::ConvShape& s, DT dt, bool tf32,
                             size_t workspace_cap, const void* a, const void* b, void* out,
                             cudnnHandle_t h, Stream st);

// Runs the chosen plan (capturable: its workspace from the engine's allocator).
void run(const Plan& p, const void* a, const void* b, void* out, cudnnHandle_t h, Stream st);

}  // namespace hr::cuda::cudnn_graph
