// The CUDA kernels' storage-dtype tag for an engine dtype: one mapping for the whole engine.
#pragma once
#include "engine/dtype.h"
#include "engine/error.h"
#include "kernels/cuda/cuda_kernels.h"

namespace hr {

// f32, f16 and bf16 have CUDA kernels; any other dtype is an error naming `who`.
inline cuda::DT cuda_dtype(DType t, const char* who) {
  switch (t) {
    case DType::f32: return cuda::DT::f32;
    case DType::f16: return cuda::DT::f16;
    case DType::bf16: return cuda::DT::bf16;
    default: break;
  }
  throw Error(str_cat(who, ": no CUDA kernels for dtype ", dtype_name(t)));
}

}  // namespace hr
