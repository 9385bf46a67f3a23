// CPU-only builds: every function of kernels/cuda/cuda_kernels.h and kernels/cuda/fused.h,
// each throwing "<name> has no CUDA implementation (built without CUDA)", except available()
// (false) and device_count() (0).
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/error.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/fused.h"
#include "kernels/cuda/nccl.h"
#include "kernels/cuda/sync_bn.h"

namespace hr::cuda {

#define HR_NO_CUDA(ret, name, params)                                                      \
  ret name params {                                                                        \
    throw ::hr::Error(#name " has no CUDA implementation (built without CUDA)");          \
  }

using kern::ConvShape;
using kern::PoolShape;
using kern::ResampleShape;

bool available() { return false; }
int device_count() { return 0; }

// runtime
HR_NO_CUDA(std::string, device_name, (int))
HR_NO_CUDA(void*, alloc, (size_t, Stream))
HR_NO_CUDA(void, free, (void*, Stream))
HR_NO_CUDA(size_t, allocated_bytes, ())
HR_NO_CUDA(size_t, peak_allocated_bytes, ())
HR_NO_CUDA(void, reset_peak_allocated_bytes, ())
HR_NO_CUDA(size_t, reserved_bytes, ())
HR_NO_CUDA(void, empty_cache, ())
HR_NO_CUDA(Stream, default_stream, ())
HR_NO_CUDA(Stream, create_stream, ())
HR_NO_CUDA(void, destroy_stream, (Stream))
HR_NO_CUDA(void, synchronize, (Stream))
HR_NO_CUDA(Event, create_event, ())
HR_NO_CUDA(void, destroy_event, (Event))
HR_NO_CUDA(void, record_event, (Event, Stream))
HR_NO_CUDA(void, wait_event, (Stream, Event))
HR_NO_CUDA(void, memcpy_h2d, (void*, const void*, size_t, Stream))
HR_NO_CUDA(void, memcpy_d2h, (void*, const void*, size_t, Stream))
HR_NO_CUDA(void, memcpy_d2d, (void*, const void*, size_t, Stream))
HR_NO_CUDA(void, memset_zero, (void*, size_t, Stream))
HR_NO_CUDA(void*, alloc_pinned, (size_t))
HR_NO_CUDA(void, free_pinned, (void*))
HR_NO_CUDA(void, memcpy_h2d_async, (void*, const void*, size_t, Stream))
HR_NO_CUDA(void, event_synchronize, (Event))
HR_NO_CUDA(void, memcpy_2d, (void*, size_t, const void*, size_t, size_t, size_t, Stream))

// CUDA graphs
HR_NO_CUDA(void, begin_capture, (Stream))
HR_NO_CUDA(GraphExec, end_capture, (Stream))
HR_NO_CUDA(void, launch_graph, (GraphExec, Stream))
HR_NO_CUDA(void, destroy_graph, (GraphExec))
HR_NO_CUDA(bool, is_capturing, (Stream))

// layout and dtype
HR_NO_CUDA(void, nchw_to_nhwc, (DT, int64_t, int64_t, int64_t, const void*, void*, Stream))
HR_NO_CUDA(void, nhwc_to_nchw, (DT, int64_t, int64_t, int64_t, const void*, void*, Stream))
HR_NO_CUDA(void, convert, (int64_t, DT, const void*, DT, void*, Stream))
HR_NO_CUDA(void, lut_u8, (int64_t, int64_t, int64_t, int, const uint8_t*, const float*,
                          const int64_t*, float*, Stream))

// convolution
HR_NO_CUDA(void, conv2d_forward,
           (const ConvShape&, DT, const void*, const void*, const float*, void*, Stream))
HR_NO_CUDA(void, conv2d_backward_data, (const ConvShape&, DT, const void*, const void*, void*, Stream))
HR_NO_CUDA(void, conv2d_backward_weight,
           (const ConvShape&, DT, const void*, const void*, void*, float*, Stream))

// batch norm
HR_NO_CUDA(void, batchnorm_train_forward,
           (DT, int64_t, int64_t, const void*, const float*, const float*, float, float, float*,
            float*, void*, float*, float*, Stream))
HR_NO_CUDA(void, batchnorm_infer_forward,
           (DT, int64_t, int64_t, const void*, const float*, const float*, const float*,
            const float*, float, void*, Stream))
HR_NO_CUDA(void, batchnorm_train_backward,
           (DT, int64_t, int64_t, const void*, const void*, const float*, const float*,
            const float*, void*, float*, float*, Stream))
HR_NO_CUDA(void, batchnorm_infer_backward,
           (DT, int64_t, int64_t, const void*, const void*, const float*, const float*,
            const float*, float, void*, float*, float*, Stream))

// element-wise
HR_NO_CUDA(void, group_norm_forward,
          (DT, int64_t, int64_t, int64_t, int64_t, const void*, const float*, const float*, float,
           void*, float*, float*, Stream))
HR_NO_CUDA(void, group_norm_backward,
          (DT, int64_t, int64_t, int64_t, int64_t, const void*, const void*, const float*,
           const float*, const float*, void*, float*, float*, Stream))
HR_NO_CUDA(void, fold_batch_norm,
          (DT, int64_t, int64_t, const void*, const float*, const float*, const float*,
           const float*, const float*, float, void*, float*, Stream))
HR_NO_CUDA(void, relu_forward, (DT, int64_t, const void*, void*, Stream))
HR_NO_CUDA(void, relu_backward, (DT, int64_t, const void*, const void*, void*, Stream))
HR_NO_CUDA(void, add, (DT, int64_t, const void*, const void*, void*, Stream))
HR_NO_CUDA(void, axpy, (DT, int64_t, float, const void*, void*, Stream))
HR_NO_CUDA(void, scale, (DT, int64_t, float, const void*, void*, Stream))
HR_NO_CUDA(void, fill, (DT, int64_t, float, void*, Stream))

// resampling and pooling
HR_NO_CUDA(void, upsample_nearest_forward,
           (DT, const ResampleShape&, const void*, void*, Stream, const void*))
HR_NO_CUDA(void, upsample_nearest_backward, (DT, const ResampleShape&, const void*, void*, Stream))
HR_NO_CUDA(void, upsample_bilinear_forward, (DT, const ResampleShape&, const void*, void*, Stream))
HR_NO_CUDA(void, upsample_bilinear_backward, (DT, const ResampleShape&, const void*, void*, Stream))
HR_NO_CUDA(void, avgpool2d_forward, (DT, const PoolShape&, const void*, void*, Stream))
HR_NO_CUDA(void, avgpool2d_backward, (DT, const PoolShape&, const void*, void*, Stream))
HR_NO_CUDA(void, global_avgpool_forward, (DT, int64_t, int64_t, int64_t, const void*, void*, Stream))
HR_NO_CUDA(void, global_avgpool_backward, (DT, int64_t, int64_t, int64_t, const void*, void*, Stream))

// matrix
HR_NO_CUDA(void, linear_forward,
           (DT, int64_t, int64_t, int64_t, const void*, const void*, const float*, void*, Stream))
HR_NO_CUDA(void, linear_backward,
           (DT, int64_t, int64_t, int64_t, const void*, const void*, const void*, void*, void*,
            float*, Stream))
HR_NO_CUDA(void, bmm,
           (DT, int64_t, int64_t, int64_t, int64_t, bool, bool, const void*, const void*, void*,
            Stream))

// softmax, dropout
HR_NO_CUDA(void, softmax_forward, (DT, int64_t, int64_t, int64_t, const void*, void*, Stream))
HR_NO_CUDA(void, softmax_backward,
           (DT, int64_t, int64_t, int64_t, const void*, const void*, void*, Stream))
HR_NO_CUDA(void, dropout2d_mask, (int64_t*, int64_t, int64_t, float, float, float*, Stream))
HR_NO_CUDA(void, channel_scale,
           (DT, int64_t, int64_t, int64_t, bool, const void*, const float*, void*, Stream))

// losses
HR_NO_CUDA(float, heatmap_loss_forward,
           (DT, int64_t, int64_t, int64_t, const void*, const void*, const float*, Stream))
HR_NO_CUDA(void, heatmap_loss_backward,
           (DT, int64_t, int64_t, int64_t, const void*, const void*, const float*, float, void*,
            Stream))
HR_NO_CUDA(float, softmax_ce_forward,
           (DT, int64_t, int64_t, int64_t, const void*, const int64_t*, int64_t, Stream, float,
            const float*))
HR_NO_CUDA(void, softmax_ce_backward,
           (DT, int64_t, int64_t, int64_t, const void*, const int64_t*, int64_t, float, void*,
            Stream, float, const float*))
HR_NO_CUDA(void, heatmap_loss_forward_dev,
           (DT, int64_t, int64_t, int64_t, const void*, const void*, const float*, float*, Stream))
HR_NO_CUDA(void, heatmap_loss_backward_dev,
           (DT, int64_t, int64_t, int64_t, const void*, const void*, const float*, const float*,
            void*, Stream))
HR_NO_CUDA(void, softmax_ce_forward_dev,
           (DT, int64_t, int64_t, int64_t, const void*, const int64_t*, int64_t, float*, Stream,
            float, const float*))
HR_NO_CUDA(void, softmax_ce_backward_dev,
           (DT, int64_t, int64_t, int64_t, const void*, const int64_t*, int64_t, const float*,
            void*, Stream, float, const float*))
HR_NO_CUDA(void, ohem_ce_forward_dev,
           (DT, int64_t, int64_t, int64_t, const void*, const int64_t*, int64_t, float, int64_t,
            const float*, float*, float*, Stream))
HR_NO_CUDA(void, ohem_ce_backward_dev,
           (DT, int64_t, int64_t, int64_t, const void*, const int64_t*, int64_t, const float*,
            const float*, const float*, void*, Stream))
HR_NO_CUDA(void, loss_accumulate, (const float*, double, double*, Stream))

// detection
HR_NO_CUDA(void, exp_forward, (DT, int64_t, const void*, void*, Stream))
HR_NO_CUDA(void, exp_backward, (DT, int64_t, const void*, const void*, void*, Stream))
HR_NO_CUDA(void, scale_by, (DT, int64_t, const void*, const float*, void*, Stream))
HR_NO_CUDA(void, dot, (DT, int64_t, const void*, const void*, float*, Stream))
HR_NO_CUDA(void, sigmoid_focal_loss_forward_dev,
           (DT, int64_t, int64_t, int64_t, const void*, const int64_t*, float, float, float*,
            Stream))
HR_NO_CUDA(void, sigmoid_focal_loss_backward_dev,
           (DT, int64_t, int64_t, int64_t, const void*, const int64_t*, float, float,
            const float*, void*, Stream))
HR_NO_CUDA(void, iou_loss_forward_dev,
           (DT, int64_t, int64_t, const void*, const float*, const float*, float*, Stream))
HR_NO_CUDA(void, iou_loss_backward_dev,
           (DT, int64_t, int64_t, const void*, const float*, const float*, const float*, void*,
            Stream))
HR_NO_CUDA(void, masked_bce_forward_dev,
           (DT, int64_t, const void*, const float*, const float*, float*, Stream))
HR_NO_CUDA(void, masked_bce_backward_dev,
           (DT, int64_t, const void*, const float*, const float*, const float*, void*, Stream))

bool conv_cudnn_graph_enabled() { return false; }
int64_t conv_cudnn_graph_plans() { return 0; }

// optimizers
HR_NO_CUDA(void, sgd_multi_step,
           (const OptimTensor*, int64_t, const OptimHyper&, float, float, bool, Stream))
HR_NO_CUDA(void, adam_multi_step,
           (const OptimTensor*, int64_t, const OptimHyper&, float, float, float, bool, Stream))
HR_NO_CUDA(OptimHyper, adam_hyper, (float, float, float, int64_t))
HR_NO_CUDA(void, sgd_step,
           (int64_t, float*, const float*, float*, float, float, float, float, bool, bool, Stream))
HR_NO_CUDA(void, adam_step,
           (int64_t, float*, const float*, float*, float*, float, float, float, float, float, bool,
            int64_t, Stream))
HR_NO_CUDA(void, sgd_step_dev,
           (int64_t, float*, const float*, float*, const float*, float, float, float, bool, Stream))
HR_NO_CUDA(void, adam_step_dev,
           (int64_t, float*, const float*, float*, float*, const float*, float, float, float, float,
            bool, Stream))

// fused.h
HR_NO_CUDA(void, batchnorm_act_train_forward,
           (DT, int64_t, int64_t, const void*, const float*, const float*, float, float, float*,
            float*, const void*, bool, void*, float*, float*, Stream))
HR_NO_CUDA(void, batchnorm_act_train_backward,
           (DT, int64_t, int64_t, const void*, const void*, const void*, const float*,
            const float*, const float*, bool, void*, void*, float*, float*, Stream))
HR_NO_CUDA(void, batchnorm_act_infer_forward,
           (DT, int64_t, int64_t, const void*, const float*, const float*, const float*,
            const float*, float, const void*, bool, void*, Stream))
HR_NO_CUDA(bool, unscale_and_check, (int64_t, float*, float, Stream))
HR_NO_CUDA(void, batchnorm_test_config, (int, int, int))

// NCCL (kernels/cuda/nccl.h)
bool nccl_built() { return false; }
HR_NO_CUDA(void, nccl_unique_id, (void*))
HR_NO_CUDA(void*, nccl_init, (const void*, int, int))
HR_NO_CUDA(void, nccl_group_start, ())
HR_NO_CUDA(void, nccl_group_end, ())
HR_NO_CUDA(void, nccl_all_reduce_f64, (void*, double*, int64_t, Stream))
HR_NO_CUDA(void, nccl_all_reduce_out, (void*, const void*, void*, int64_t, DT, bool, Stream))

// synchronised batch norm (kernels/cuda/sync_bn.h)
HR_NO_CUDA(size_t, syncbn_workspace_bytes, (int64_t, int64_t))
HR_NO_CUDA(double*, syncbn_forward_sums, (DT, int64_t, int64_t, const void*, void*, Stream))
HR_NO_CUDA(double*, syncbn_forward_sq, (DT, int64_t, int64_t, const void*, void*, Stream))
HR_NO_CUDA(void, syncbn_forward_apply, (DT, int64_t, int64_t, const void*, const float*, const float*,
                                        float, float, float*, float*, const void*, bool, void*,
                                        float*, float*, void*, Stream))
HR_NO_CUDA(double*, syncbn_backward_sums, (DT, int64_t, int64_t, const void*, const void*, const void*,
                                           const float*, const float*, bool, void*, float*, float*,
                                           void*, Stream))
HR_NO_CUDA(void, syncbn_backward_dx, (DT, int64_t, int64_t, const void*, const void*, const void*,
                                      const float*, const float*, const float*, bool, void*, void*,
                                      Stream))

#undef HR_NO_CUDA

}  // namespace hr::cuda

