// ONNX export of an HRNet model (hrnet-export; the hrnet_export library, built when CMake's
// HR_ONNX finds ONNX and Protobuf): the model's inference graph recorded with a batch dimension
// that stays dynamic in the model ("batch"), batch norm folded into the convolutions, opset 17,
// checked with the ONNX checker and shape inference, written atomically. The model's input is
// "input" f32 [batch, 3, H, W] (normalised as for the engine); its outputs, by head:
//   pose  "heatmaps"  [batch, joints, H/4, W/4]
//   seg   "logits"    [batch, classes, H/4, W/4] (HRNetV2; with OCR its final output, and with
//                     ocr_aux also "aux_logits", the auxiliary head's)
//   cls   "logits"    [batch, classes]
//   det   per pyramid level l: "cls_logits.l" [batch, C, h, w], "bbox_reg.l" [batch, 4, h, w]
//         (l, t, r, b distances in input pixels), "centerness.l" [batch, 1, h, w]; with
//         det_decode instead "detections" [K, 7]: (image index, x1, y1, x2, y2, score, label) in
//         the input's pixels, FCOS post-processing as ONNX nodes (data::fcos_postprocess_onnx)
// docs/EXPORT.md has the details.
#pragma once
#include <cstdint>
#include <string>

#include "engine/export/onnx.h"
#include "models/config.h"
#include "models/hrnet.h"

namespace hr::tasks {

struct ExportOptions {
  std::string path;               // the .onnx file export_onnx writes
  int64_t height = 0, width = 0;  // the input size; 0: the config's (or built-in model's)
  int64_t opset = 17;             // only 17 is supported
  bool det_decode = false;        // det: FCOS post-processing in the model
  bool ocr_aux = false;           // seg with OCR: the auxiliary logits as a second output
};

// The exported model (not written). cfg: the experiment config the model was built from (the
// input size and, for det_decode, MODEL.FCOS.* / TEST.DETECTIONS_PER_IMG), nullptr for a built-in
// model (its image size; maskrcnn-benchmark's post-processing defaults). The model is recorded
// in eval mode (its mode is restored) on the device of its parameters. Errors (an option that
// does not apply to the model's head, an input size the model cannot take) name what is wrong.
OnnxModel build_onnx(models::HRNet& model, const models::Config* cfg, const ExportOptions& o);

struct ExportSummary {
  std::string path;
  int64_t bytes = 0;
  OnnxStats stats;
};
// build_onnx, then the model written to o.path atomically (no partial file on any failure).
ExportSummary export_onnx(models::HRNet& model, const models::Config* cfg, const ExportOptions& o);

}  // namespace hr::tasks
