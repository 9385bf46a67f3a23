// HR_HOST_DEVICE: a function of the headers shared by the CPU and the CUDA kernels
// (dropout_hash.h, det_loss_math.h, optim_math.h), compiled for both sides by nvcc and inline
// for the host compiler.
#pragma once

#if defined(__CUDACC__)
#define HR_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HR_HOST_DEVICE inline
#endif
