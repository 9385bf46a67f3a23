// CUDA kernels and device runtime, as the engine sees them. This header needs no CUDA headers:
// a CPU-only build links kernels/no_cuda/stubs.cpp, whose functions throw
// "<op> has no CUDA implementation (built without CUDA)".
//
// Layout on the GPU: 4-D activations are channels-last (NHWC: element (n,c,h,w) at
// ((n*H + h)*W + w)*C + c); conv weights are [K, R, S, C] (KRSC). Every kernel takes the
// stream it runs on and OVERWRITES its outputs. Storage dtypes: f32, f16, bf16 (`dt`);
// arithmetic accumulates in fp32; batch-norm statistics, running stats, gamma/beta and
// optimizer state are always fp32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/shapes.h"

namespace hr::cuda {

using Stream = void*;  // cudaStream_t
using Event = void*;   // cudaEvent_t
enum class DT : int { f32 = 0, f16 = 1, bf16 = 2 };

// ---- runtime ----
bool available();       // a device is present and usable (false, never throws, when none)
int device_count();
std::string device_name(int device);
// Stream-ordered caching allocator: no cudaMalloc in the steady state. Memory freed on a
// stream may be reused by work on that stream at once, by other streams after an event.
void* alloc(size_t bytes, Stream s);
void free(void* p, Stream s);
size_t allocated_bytes();       // live bytes handed out
size_t peak_allocated_bytes();
void reset_peak_allocated_bytes();  // the peak from now on (starts at the live bytes)
size_t reserved_bytes();        // bytes held from cudaMalloc
void empty_cache();
Stream default_stream();        // the engine's own stream (never the legacy default stream)
Stream create_stream();
void destroy_stream(Stream s);
void synchronize(Stream s);
Event create_event();
void destroy_event(Event e);
void record_event(Event e, Stream s);
void wait_event(Stream s, Event e);
void memcpy_h2d(void* dst, const void* src, size_t bytes, Stream s);  // synchronous w.r.t. host
void memcpy_d2h(void* dst, const void* src, size_t bytes, Stream s);  // synchronous
void memcpy_d2d(void* dst, const void* src, size_t bytes, Stream s);  // async on s
// Page-locked host memory: the source of an asynchronous host-to-device copy, which a CUDA graph
// captures as a node that reads the host memory when it replays.
void* alloc_pinned(size_t bytes);
void free_pinned(void* p);
void memcpy_h2d_async(void* dst, const void* pinned_src, size_t bytes, Stream s);
void event_synchronize(Event e);  // the host waits for the event's work
void memset_zero(void* dst, size_t bytes, Stream s);
// rows x width_bytes block between pitched buffers (cudaMemcpy2DAsync, device to device)
void memcpy_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width_bytes,
               size_t rows, Stream s);

// ---- CUDA graphs (stream capture) ----
// One capture at a time per process; run the step once eagerly before capturing it. While a
// capture is in progress:
//  - synchronising calls on a capturing stream (synchronize, memcpy_h2d, memcpy_d2h, the
//    value-returning losses, unscale_and_check) throw instead of invalidating the capture;
//  - alloc serves only from memory the cache holds (a block freed earlier in the capture on
//    the same stream, an idle cached block, else one freed earlier in the capture on another
//    capturing stream, which the requesting stream then waits for) and otherwise throws
//    "cuda::alloc: a new allocation of N bytes during graph capture; run the step once
//    before capturing";
//  - a convolution whose (shape, dtype, pass) has no algorithm chosen yet (timing, cuDNN
//    search) throws likewise;
//  - memory freed on a capturing stream, and memory allocated by the capture and freed later,
//    is not reused by anything else until destroy_graph (the graph still uses it on replay).
// A refused call also makes end_capture fail. Buffers the graph reads or writes that were
// allocated outside the capture must outlive the graph.
using GraphExec = void*;  // cudaGraphExec_t
// Starts capturing the work submitted to `s` (cudaStreamBeginCapture, thread-local mode).
// Work other streams join through events recorded on a capturing stream is captured too
// (fork: record_event on s, wait_event on the other stream; join back the same way before
// end_capture). Waits for the device first, so every cached block is idle.
void begin_capture(Stream s);
// Ends the capture on `s` and instantiates it (the cudaGraph_t is destroyed after
// instantiation). Call it from begin_capture's thread, on error paths too. When the capture
// failed (a call refused or not permitted while capturing, a fork not joined back), throws
// hr::Error naming the cause; the streams have then left capture mode and are usable.
GraphExec end_capture(Stream s);
// Replays g on s, after the work already queued on s (launches of one graph run in order).
void launch_graph(GraphExec g, Stream s);
// Destroys g without waiting: the memory it kept returns to the cache ordered after its last
// launch. nullptr is ignored.
void destroy_graph(GraphExec g);
// s is capturing (or its capture was invalidated and has not been ended yet).
bool is_capturing(Stream s);

// ---- layout and dtype ----
// [N,C,H,W] <-> [N,H,W,C] (also used for weights: [K,C,R,S] <-> [K,R,S,C])
void nchw_to_nhwc(DT dt, int64_t N, int64_t C, int64_t HW, const void* x, void* y, Stream s);
void nhwc_to_nchw(DT dt, int64_t N, int64_t C, int64_t HW, const void* x, void* y, Stream s);
void convert(int64_t n, DT from, const void* x, DT to, void* y, Stream s);
// y [N, H, W, C] = lut[c][x [N, H, W, C]]: bytes through a per-channel table, channel-interleaved
// in and out (an RGB crop to the channels-last fp32 input). lut [C][256] fp32, C <= 4. size
// [N][2] i64 (optional, device): sample n's valid rows and columns {h, w}; outside, y = 0.
void lut_u8(int64_t N, int64_t H, int64_t W, int C, const uint8_t* x, const float* lut,
            const int64_t* size, float* y, Stream s);

// ---- convolution (NHWC x, KRSC w) ----
// Picks, per shape and dtype, the faster of our implicit-GEMM kernels and cuDNN the first time
// a shape is seen (timed), and caches the choice. bias [K] is fp32 or nullptr.
void conv2d_forward(const kern::ConvShape& s, DT dt, const void* x, const void* w,
                    const float* bias, void* y, Stream st);
void conv2d_backward_data(const kern::ConvShape& s, DT dt, const void* dy, const void* w, void* dx,
                          Stream st);
// dw in dt; dbias fp32 [K] or nullptr.
void conv2d_backward_weight(const kern::ConvShape& s, DT dt, const void* x, const void* dy,
                            void* dw, float* dbias, Stream st);
// cuDNN's side runs through its graph API in this process (built with the cuDNN frontend, and
// not HR_CUDNN_API=legacy), and the (shape, dtype, op) it has served so far; the rest ran through
// the legacy API (kernels/cuda/conv_cudnn_graph.h).
bool conv_cudnn_graph_enabled();
int64_t conv_cudnn_graph_plans();

// ---- batch norm over NHWC rows: x viewed as [M = N*H*W, C] ----
void batchnorm_train_forward(DT dt, int64_t M, int64_t C, const void* x, const float* gamma,
                             const float* beta, float eps, float momentum, float* running_mean,
                             float* running_var, void* y, float* save_mean, float* save_invstd,
                             Stream st);
void batchnorm_infer_forward(DT dt, int64_t M, int64_t C, const void* x, const float* gamma,
                             const float* beta, const float* running_mean,
                             const float* running_var, float eps, void* y, Stream st);
void batchnorm_train_backward(DT dt, int64_t M, int64_t C, const void* x, const void* dy,
                              const float* gamma, const float* save_mean, const float* save_invstd,
                              void* dx, float* dgamma, float* dbeta, Stream st);
void batchnorm_infer_backward(DT dt, int64_t M, int64_t C, const void* x, const void* dy,
                              const float* gamma, const float* running_mean,
                              const float* running_var, float eps, void* dx, float* dgamma,
                              float* dbeta, Stream st);

// ---- group norm over rows [M = N*HW, C] in G groups of C/G channels ----
// gamma, beta fp32 [C]; mean, rstd fp32 [N, G] (outputs of the forward, inputs of the backward).
void group_norm_forward(DT dt, int64_t N, int64_t HW, int64_t C, int64_t G, const void* x,
                        const float* gamma, const float* beta, float eps, void* y, float* mean,
                        float* rstd, Stream st);
// dx, dgamma, dbeta may each be nullptr (skipped).
void group_norm_backward(DT dt, int64_t N, int64_t HW, int64_t C, int64_t G, const void* x,
                         const void* dy, const float* gamma, const float* mean, const float* rstd,
                         void* dx, float* dgamma, float* dbeta, Stream st);

// Batch norm folded into the convolution before it (inference), as cpu::fold_batch_norm: w and
// w_out [K, inner] in dt (KRSC or KCRS: K outermost), b (or nullptr), gamma, beta, running stats
// and b_out fp32 [K].
void fold_batch_norm(DT dt, int64_t K, int64_t inner, const void* w, const float* b,
                     const float* gamma, const float* beta, const float* running_mean,
                     const float* running_var, float eps, void* w_out, float* b_out, Stream st);

// ---- element-wise (any layout) ----
void relu_forward(DT dt, int64_t n, const void* x, void* y, Stream st);
void relu_backward(DT dt, int64_t n, const void* y, const void* dy, void* dx, Stream st);
void add(DT dt, int64_t n, const void* a, const void* b, void* y, Stream st);
void axpy(DT dt, int64_t n, float alpha, const void* x, void* y, Stream st);
void scale(DT dt, int64_t n, float alpha, const void* x, void* y, Stream st);
void fill(DT dt, int64_t n, float value, void* y, Stream st);

// ---- resampling (NHWC) ----
// With `add` ([N,OH,OW,C]): y = add + the upsampled x in the same pass (graph pass
// fuse_upsample_add), rounded once as the unfused add.
void upsample_nearest_forward(DT dt, const kern::ResampleShape& s, const void* x, void* y,
                              Stream st, const void* add = nullptr);
void upsample_nearest_backward(DT dt, const kern::ResampleShape& s, const void* dy, void* dx,
                               Stream st);
void upsample_bilinear_forward(DT dt, const kern::ResampleShape& s, const void* x, void* y,
                               Stream st);
void upsample_bilinear_backward(DT dt, const kern::ResampleShape& s, const void* dy, void* dx,
                                Stream st);

// ---- pooling (NHWC) ----
void avgpool2d_forward(DT dt, const kern::PoolShape& s, const void* x, void* y, Stream st);
void avgpool2d_backward(DT dt, const kern::PoolShape& s, const void* dy, void* dx, Stream st);
void global_avgpool_forward(DT dt, int64_t N, int64_t C, int64_t HW, const void* x, void* y,
                            Stream st);
void global_avgpool_backward(DT dt, int64_t N, int64_t C, int64_t HW, const void* dy, void* dx,
                             Stream st);

// ---- matrix (cuBLAS; fp32 bias) ----
void linear_forward(DT dt, int64_t M, int64_t I, int64_t O, const void* x, const void* w,
                    const float* bias, void* y, Stream st);
void linear_backward(DT dt, int64_t M, int64_t I, int64_t O, const void* x, const void* w,
                     const void* dy, void* dx, void* dw, float* dbias, Stream st);
// Batched row-major products c[i] = op(a[i]) op(b[i]) in cpu::bmm's layout (3-D operands are
// row-major on the GPU too), one cublasGemmStridedBatchedEx with fp32 accumulation.
void bmm(DT dt, int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
         const void* a, const void* b, void* c, Stream st);

// ---- softmax over dimension j of x viewed in memory as [outer, L, inner] (fp32 arithmetic) ----
void softmax_forward(DT dt, int64_t outer, int64_t L, int64_t inner, const void* x, void* y,
                     Stream st);
void softmax_backward(DT dt, int64_t outer, int64_t L, int64_t inner, const void* y,
                      const void* dy, void* dx, Stream st);

// ---- channel dropout (Dropout2d) ----
// state: {seed, step} i64 on the device, read and advanced (step += 1) by the kernel itself, so a
// captured graph draws a fresh mask at every replay; mask fp32 [N, C] as cpu::dropout2d_mask.
void dropout2d_mask(int64_t* state, int64_t N, int64_t C, float p, float scale, float* mask,
                    Stream st);
// y = x * s[n, c]: x, y [N, HW, C] when channels_last (NHWC), else [N, C, HW]; s fp32 [N, C].
void channel_scale(DT dt, int64_t N, int64_t C, int64_t HW, bool channels_last, const void* x,
                   const float* s, void* y, Stream st);

// ---- losses (pred/logits in dt, loss fp32, synchronous: return the value) ----
// pred, gt channels-last [N, HW, J]; weight [N, J] fp32.
float heatmap_loss_forward(DT dt, int64_t N, int64_t J, int64_t HW, const void* pred,
                           const void* gt, const float* weight, Stream st);
void heatmap_loss_backward(DT dt, int64_t N, int64_t J, int64_t HW, const void* pred,
                           const void* gt, const float* weight, float dloss, void* dpred,
                           Stream st);
// logits NHWC [N, HW, C]; labels [N, HW] int64; label smoothing e and class_weight (fp32 [C] on
// the device, null: unweighted) as cpu::softmax_ce_forward
float softmax_ce_forward(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                         const int64_t* labels, int64_t ignore_index, Stream st,
                         float smoothing = 0.f, const float* class_weight = nullptr);
void softmax_ce_backward(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                         const int64_t* labels, int64_t ignore_index, float dloss, void* dlogits,
                         Stream st, float smoothing = 0.f, const float* class_weight = nullptr);
// The same losses with the scalars on the device, for graph capture: no host synchronisation,
// deterministic, the same numerics (the synchronous versions above are the forwards plus one
// copy to the host, and the backwards with dloss from the host).
// loss: one fp32 on the device, overwritten (no host synchronisation).
void heatmap_loss_forward_dev(DT dt, int64_t N, int64_t J, int64_t HW, const void* pred,
                              const void* gt, const float* weight, float* loss, Stream st);
// dloss: one fp32 on the device.
void heatmap_loss_backward_dev(DT dt, int64_t N, int64_t J, int64_t HW, const void* pred,
                               const void* gt, const float* weight, const float* dloss,
                               void* dpred, Stream st);
// The mean divides by the number of counted pixels, computed on the device (loss 0 when none).
// A label outside [0, C) that is not ignore_index makes *loss NaN (softmax_ce_forward throws,
// naming it); the backward treats such a label as ignored.
void softmax_ce_forward_dev(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                            const int64_t* labels, int64_t ignore_index, float* loss, Stream st,
                            float smoothing = 0.f, const float* class_weight = nullptr);
void softmax_ce_backward_dev(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                             const int64_t* labels, int64_t ignore_index, const float* dloss,
                             void* dlogits, Stream st, float smoothing = 0.f,
                             const float* class_weight = nullptr);
// OHEM cross-entropy as cpu::ohem_ce_forward (the k-th smallest probability by a cub radix sort
// of the target probabilities, workspace from the caching allocator): *loss and *threshold, one
// fp32 each on the device; an invalid label makes *loss NaN. class_weight fp32 [C] or null.
void ohem_ce_forward_dev(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                         const int64_t* labels, int64_t ignore_index, float thresh,
                         int64_t min_kept, const float* class_weight, float* loss,
                         float* threshold, Stream st);
// threshold, dloss: the forward's threshold and the loss's gradient, one fp32 each on the device.
void ohem_ce_backward_dev(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                          const int64_t* labels, int64_t ignore_index, const float* class_weight,
                          const float* threshold, const float* dloss, void* dlogits, Stream st);
// A running sum of losses on the device, for training without reading every step's loss back
// (capturable): acc[0] += double(*loss) * weight (rounded multiply, then add: the host's
// arithmetic), acc[1] = *loss. loss: one fp32; acc: two doubles, all on the device.
void loss_accumulate(const float* loss, double weight, double* acc, Stream st);

// ---- detection (FCOS head; kernels/cuda/det_loss.cu, formulas in kernels/det_loss_math.h) ----
// Element-wise, any layout: y = exp(x); dx = dy * y (y: exp's output); y = *s * x with s one
// fp32 on the device (a learnable scale: read when the kernel runs, so captures replay it).
void exp_forward(DT dt, int64_t n, const void* x, void* y, Stream st);
void exp_backward(DT dt, int64_t n, const void* y, const void* dy, void* dx, Stream st);
void scale_by(DT dt, int64_t n, const void* x, const float* s, void* y, Stream st);
// *out = sum_i a[i] * b[i] (one fp32 on the device; deterministic, no host synchronisation)
void dot(DT dt, int64_t n, const void* a, const void* b, float* out, Stream st);
// The losses as cpu::sigmoid_focal_loss_forward, cpu::iou_loss_forward and cpu::masked_bce_forward,
// their scalars on the device (deterministic, capturable; normalisers computed on the device).
// logits [N, C, P] in dt (3-D: row-major), labels [N, P] int64. A label above C makes *loss NaN
// (the CPU throws); the backward treats such a label as ignored.
void sigmoid_focal_loss_forward_dev(DT dt, int64_t N, int64_t C, int64_t P, const void* logits,
                                    const int64_t* labels, float gamma, float alpha, float* loss,
                                    Stream st);
void sigmoid_focal_loss_backward_dev(DT dt, int64_t N, int64_t C, int64_t P, const void* logits,
                                     const int64_t* labels, float gamma, float alpha,
                                     const float* dloss, void* dlogits, Stream st);
// pred [N, 4, P] in dt; target fp32 [N, 4, P]; weight fp32 [N, P]
void iou_loss_forward_dev(DT dt, int64_t N, int64_t P, const void* pred, const float* target,
                          const float* weight, float* loss, Stream st);
void iou_loss_backward_dev(DT dt, int64_t N, int64_t P, const void* pred, const float* target,
                           const float* weight, const float* dloss, void* dpred, Stream st);
// logits [n] in dt; target, mask fp32 [n]
void masked_bce_forward_dev(DT dt, int64_t n, const void* logits, const float* target,
                            const float* mask, float* loss, Stream st);
void masked_bce_backward_dev(DT dt, int64_t n, const void* logits, const float* target,
                             const float* mask, const float* dloss, void* dlogits, Stream st);

// ---- optimizers (fp32 master weights and state) ----
// Multi-tensor steps: every tensor of ts[count] in a few launches (up to 64 tensors each), the
// per-element updates of kernels/optim_math.h.
struct OptimTensor {
  int64_t n;
  float* p;
  const float* grad;
  float* buf0;  // SGD: the momentum buffer (nullptr without momentum); Adam: exp_avg
  float* buf1;  // Adam: exp_avg_sq
  float weight_decay;
  int group;       // SGD: the hyper-parameters' group, 0 or 1; Adam: 0
  int first_step;  // SGD: 1 (buf = g) or 0; -1: the group's flag of the hyper-parameters
  // Optional: a 16-bit copy of p (copy_dt f16 or bf16), rewritten from the updated values in the
  // same pass, rounded to nearest even as convert() rounds: the weights a mixed-precision graph
  // reads (Optimizer::weight_copy), so no cast runs per weight per step.
  void* copy = nullptr;
  DT copy_dt = DT::bf16;
};
// The step-dependent scalars, by value (v) or, when dev is set, read from device memory (fp32)
// when the kernels run, so that a captured graph replays with the values uploaded before each
// launch. SGD: {lr, first step} of group 0, then of group 1; Adam: {lr, 1 - beta1^t,
// 1 - beta2^t} (adam_hyper: in double, as the CPU's step).
struct OptimHyper {
  const float* dev = nullptr;
  double v[4] = {};
};
void sgd_multi_step(const OptimTensor* ts, int64_t count, const OptimHyper& h, float momentum,
                    float dampening, bool nesterov, Stream st);
void adam_multi_step(const OptimTensor* ts, int64_t count, const OptimHyper& h, float beta1,
                     float beta2, float eps, bool decoupled, Stream st);
OptimHyper adam_hyper(float lr, float beta1, float beta2, int64_t step);
// One tensor (the multi-tensor kernels with a count of one):
void sgd_step(int64_t n, float* p, const float* grad, float* momentum_buf, float lr,
              float momentum, float dampening, float weight_decay, bool nesterov, bool first_step,
              Stream st);
void adam_step(int64_t n, float* p, const float* grad, float* exp_avg, float* exp_avg_sq, float lr,
               float beta1, float beta2, float eps, float weight_decay, bool decoupled,
               int64_t step, Stream st);
// The same steps with the step-dependent values read from device memory when the kernel runs,
// so that a captured graph replays correctly as the learning rate and the step change (update
// `hyper` on the stream before each launch). Results equal adam_step / sgd_step's up to the
// fp32 rounding of the bias-correction terms (sgd_step_dev: the same arithmetic).
// hyper (device, fp32): hyper[0] = lr, hyper[1] = 1 - beta1^t, hyper[2] = 1 - beta2^t (t = 1-based
// step, computed by the caller on the host in double).
void adam_step_dev(int64_t n, float* p, const float* grad, float* exp_avg, float* exp_avg_sq,
                   const float* hyper, float beta1, float beta2, float eps, float weight_decay,
                   bool decoupled, Stream st);
// hyper[0] = lr, hyper[1] = 1 on the first step (buf = g), else 0.
void sgd_step_dev(int64_t n, float* p, const float* grad, float* momentum_buf, const float* hyper,
                  float momentum, float dampening, float weight_decay, bool nesterov, Stream st);

}  // namespace hr::cuda
