#!/usr/bin/python3
"""Reference data for tests/test_segmentation.cpp: the official HRNet-Semantic-Segmentation
task code (HRNet/HRNet-Semantic-Segmentation, branch HRNet-OCR: lib/core/criterion.py,
lib/core/function.py, lib/utils/utils.py, lib/datasets/base_dataset.py, cityscapes.py) re-run on
small inputs.

Run:  /usr/bin/python3 tools/gen_seg_task_reference.py --out tests/data/seg_task_reference.safetensors
Needs torch (1.13, CPU), numpy and OpenCV (cv2.resize is what the official multi_scale_aug
calls; `pip install "opencv-python-headless==4.10.0.84"` or Debian's python3-opencv).

Cases (tensors "<case>/<role>", options in the metadata):
  confusion   labels [2,23,31] (7 classes, ~10% ignore 255), scores [2,7,23,31];
              get_confusion_matrix -> cm [7,7], iou [7] (tp / max(1, pos + res - tp)), miou
  poly        the learning rate each step of the official train() runs with: adjust_learning_rate
              is called after optimizer.step(), so step t runs with poly(t-1)
  loss_ce / loss_ohem   the official CrossEntropy / OhemCrossEntropy with NUM_OUTPUTS 2,
              BALANCE_WEIGHTS [0.4, 1], the Cityscapes class weights, ignore 255, ALIGN_CORNERS
              False: aux/out logits at 1/4 of the label size -> loss, daux, dout
  infer_*     multi_scale_inference (the cityscapes.py variant and the base_dataset.py one) with
              a small stand-in model, a 3x3 stride-2 convolution (w, b): not pointwise, so the
              windows matter -> pred [1,C,H,W]
"""
import argparse
import json
import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors_out import write_safetensors  # noqa: E402

CASES = {}
TENSORS = {}
CITYSCAPES_WEIGHTS = [0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786,
                      1.0023, 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529,
                      1.0507]
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def put(case, role, a):
    TENSORS[f"{case}/{role}"] = np.ascontiguousarray(a)


# ---- lib/utils/utils.py -----------------------------------------------------------------------
def get_confusion_matrix(label, pred, size, num_class, ignore=-1):
    output = pred.cpu().numpy().transpose(0, 2, 3, 1)
    seg_pred = np.asarray(np.argmax(output, axis=3), dtype=np.uint8)
    seg_gt = np.asarray(label.cpu().numpy()[:, :size[-2], :size[-1]], dtype=np.int64)
    ignore_index = seg_gt != ignore
    seg_gt = seg_gt[ignore_index]
    seg_pred = seg_pred[ignore_index]
    index = (seg_gt * num_class + seg_pred).astype('int32')
    label_count = np.bincount(index)
    confusion_matrix = np.zeros((num_class, num_class))
    for i_label in range(num_class):
        for i_pred in range(num_class):
            cur_index = i_label * num_class + i_pred
            if cur_index < len(label_count):
                confusion_matrix[i_label, i_pred] = label_count[cur_index]
    return confusion_matrix


def adjust_learning_rate(base_lr, max_iters, cur_iters, power=0.9):
    return base_lr * ((1 - float(cur_iters) / max_iters) ** power)


# ---- lib/core/criterion.py (config.MODEL.ALIGN_CORNERS False) ---------------------------------
def ce_forward(score, target, weight, ignore):
    h, w = target.size(1), target.size(2)
    if score.size(2) != h or score.size(3) != w:
        score = F.interpolate(score, size=(h, w), mode='bilinear', align_corners=False)
    return F.cross_entropy(score, target, weight=weight, ignore_index=ignore)


def ohem_forward(score, target, weight, ignore, thresh, min_kept):
    h, w = target.size(1), target.size(2)
    if score.size(2) != h or score.size(3) != w:
        score = F.interpolate(score, size=(h, w), mode='bilinear', align_corners=False)
    pred = F.softmax(score, dim=1)
    pixel_losses = F.cross_entropy(score, target, weight=weight, ignore_index=ignore,
                                   reduction='none').contiguous().view(-1)
    mask = target.contiguous().view(-1) != ignore
    tmp_target = target.clone()
    tmp_target[tmp_target == ignore] = 0
    pred = pred.gather(1, tmp_target.unsqueeze(1))
    pred, ind = pred.contiguous().view(-1,)[mask].contiguous().sort()
    min_value = pred[min(max(1, min_kept), pred.numel() - 1)]
    threshold = max(min_value, thresh)
    pixel_losses = pixel_losses[mask][ind]
    pixel_losses = pixel_losses[pred < threshold]
    return pixel_losses.mean()


# ---- lib/datasets/base_dataset.py and cityscapes.py (model on the CPU) ------------------------
class Official:
    def __init__(self, base_size, crop_size, num_classes, cityscapes):
        self.base_size, self.crop_size = base_size, crop_size
        self.num_classes, self.cityscapes = num_classes, cityscapes

    def pad_image(self, image, h, w, size, padvalue):
        pad_image = image.copy()
        pad_h = max(size[0] - h, 0)
        pad_w = max(size[1] - w, 0)
        if pad_h > 0 or pad_w > 0:
            pad_image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT,
                                           value=padvalue)
        return pad_image

    def multi_scale_aug(self, image, rand_scale):
        long_size = int(self.base_size * rand_scale + 0.5)
        h, w = image.shape[:2]
        if h > w:
            new_h, new_w = long_size, int(w * long_size / h + 0.5)
        else:
            new_w, new_h = long_size, int(h * long_size / w + 0.5)
        return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)

    def inference(self, model, image, flip):
        size = image.size()
        pred = model(image)
        pred = F.interpolate(pred, size=size[-2:], mode='bilinear', align_corners=False)
        if flip:
            flip_img = image.numpy()[:, :, :, ::-1]
            flip_output = model(torch.from_numpy(flip_img.copy()))
            flip_output = F.interpolate(flip_output, size=size[-2:], mode='bilinear',
                                        align_corners=False)
            flip_pred = torch.from_numpy(flip_output.numpy()[:, :, :, ::-1].copy())
            pred += flip_pred
            pred = pred * 0.5
        return pred.exp()

    def multi_scale_inference(self, model, image, scales, flip):
        _, _, ori_height, ori_width = image.size()
        image = image.numpy()[0].transpose((1, 2, 0)).copy()
        if self.cityscapes:
            stride_h, stride_w = int(self.crop_size[0] * 1.0), int(self.crop_size[1] * 1.0)
        else:
            stride_h, stride_w = int(self.crop_size[0] * 2.0 / 3.0), int(self.crop_size[1] * 2.0 / 3.0)
        final_pred = torch.zeros([1, self.num_classes, ori_height, ori_width])
        padvalue = -1.0 * MEAN / STD
        for scale in scales:
            new_img = self.multi_scale_aug(image, scale)
            height, width = new_img.shape[:-1]
            whole = scale <= 1.0 if self.cityscapes else max(height, width) <= np.min(self.crop_size)
            if whole:
                if not self.cityscapes:
                    new_img = self.pad_image(new_img, height, width, self.crop_size, padvalue)
                x = torch.from_numpy(np.expand_dims(new_img.transpose((2, 0, 1)), 0))
                preds = self.inference(model, x, flip)[:, :, 0:height, 0:width]
            else:
                if not self.cityscapes and (height < self.crop_size[0] or width < self.crop_size[1]):
                    new_img = self.pad_image(new_img, height, width, self.crop_size, padvalue)
                new_h, new_w = new_img.shape[:-1]
                rows = int(np.ceil(1.0 * (new_h - self.crop_size[0]) / stride_h)) + 1
                cols = int(np.ceil(1.0 * (new_w - self.crop_size[1]) / stride_w)) + 1
                preds = torch.zeros([1, self.num_classes, new_h, new_w])
                count = torch.zeros([1, 1, new_h, new_w])
                for r in range(rows):
                    for c in range(cols):
                        h0, w0 = r * stride_h, c * stride_w
                        h1 = min(h0 + self.crop_size[0], new_h)
                        w1 = min(w0 + self.crop_size[1], new_w)
                        if self.cityscapes:
                            h0 = max(int(h1 - self.crop_size[0]), 0)
                            w0 = max(int(w1 - self.crop_size[1]), 0)
                        crop_img = new_img[h0:h1, w0:w1, :]
                        if not self.cityscapes and (h1 == new_h or w1 == new_w):
                            crop_img = self.pad_image(crop_img, h1 - h0, w1 - w0, self.crop_size,
                                                      padvalue)
                        x = torch.from_numpy(np.expand_dims(crop_img.transpose((2, 0, 1)), 0))
                        pred = self.inference(model, x, flip)
                        preds[:, :, h0:h1, w0:w1] += pred[:, :, 0:h1 - h0, 0:w1 - w0]
                        count[:, :, h0:h1, w0:w1] += 1
                preds = preds / count
                preds = preds[:, :, :height, :width]
            preds = F.interpolate(preds, (ori_height, ori_width), mode='bilinear',
                                  align_corners=False)
            final_pred += preds
        return final_pred


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/seg_task_reference.safetensors")
    args = ap.parse_args()
    torch.manual_seed(12)
    rng = np.random.default_rng(12)

    # confusion matrix and mIoU on random predictions (class 6 never predicted nor labelled:
    # IoU 0 counts in the mean, as the official)
    C = 7
    labels = rng.integers(0, C - 1, (2, 23, 31))
    labels[rng.random(labels.shape) < 0.1] = 255
    scores = rng.standard_normal((2, C, 23, 31)).astype(np.float32)
    scores[:, C - 1] -= 100
    cm = get_confusion_matrix(torch.from_numpy(labels), torch.from_numpy(scores), labels.shape, C, 255)
    pos, res, tp = cm.sum(1), cm.sum(0), np.diag(cm)
    iou = tp / np.maximum(1.0, pos + res - tp)
    CASES["confusion"] = {"classes": C, "ignore": 255, "miou": float(iou.mean()),
                          "pixel_acc": float(tp.sum() / cm.sum())}
    put("confusion", "labels", labels.astype(np.int64))
    put("confusion", "scores", scores)
    put("confusion", "cm", cm.astype(np.float32))
    put("confusion", "iou", iou.astype(np.float32))

    # poly: 5 epochs of 7 iterations, END_EPOCH 5
    base, iters, epochs = 0.01, 7, 5
    lr, seen = base, []
    for t in range(epochs * iters):
        seen.append(lr)  # optimizer.step() runs with this
        lr = adjust_learning_rate(base, epochs * iters, t)
    CASES["poly"] = {"base": base, "iters": iters, "end_epoch": epochs}
    put("poly", "lr", np.array(seen, dtype=np.float32))

    # the losses of an OCR model's two outputs
    wts = torch.tensor(CITYSCAPES_WEIGHTS)
    target = torch.randint(0, 19, (2, 33, 49))
    target[torch.rand(target.shape) < 0.1] = 255
    for name, ohem in (("loss_ce", None), ("loss_ohem", (0.7, 1500))):
        aux = (torch.randn(2, 19, 9, 13) * 2).requires_grad_()
        out = (torch.randn(2, 19, 9, 13) * 2).requires_grad_()
        loss = 0.4 * ce_forward(aux, target, wts, 255)
        if ohem:
            loss = loss + 1.0 * ohem_forward(out, target, wts, 255, ohem[0], ohem[1])
        else:
            loss = loss + 1.0 * ce_forward(out, target, wts, 255)
        loss.backward()
        CASES[name] = {"ohem": bool(ohem), "thres": ohem[0] if ohem else 0.9,
                       "keep": ohem[1] if ohem else 100000, "loss": float(loss)}
        put(name, "aux", aux.detach().numpy())
        put(name, "out", out.detach().numpy())
        put(name, "label", target.numpy().astype(np.int64))
        put(name, "daux", aux.grad.numpy())
        put(name, "dout", out.grad.numpy())

    # multi-scale, flip and sliding-window inference with a stand-in model
    K = 5
    w = torch.randn(K, 3, 3, 3) * 0.3
    b = torch.randn(K) * 0.1
    model = lambda x: F.conv2d(x, w, b, stride=2, padding=1)  # noqa: E731
    img = ((rng.random((30, 60, 3)) - MEAN) / STD).astype(np.float32)
    x = torch.from_numpy(np.expand_dims(img.transpose(2, 0, 1), 0).copy())
    for name, cs, base_size, crop, scales, flip in (
            ("infer_cityscapes", True, 60, (18, 36), [0.5, 1.0, 1.5], True),
            ("infer_cityscapes_whole", True, 60, (18, 36), [1.0], False),
            ("infer_base", False, 60, (18, 36), [0.25, 0.75, 1.0, 1.25], True),
            ("infer_base_noflip", False, 48, (24, 24), [1.0], False)):
        pred = Official(base_size, crop, K, cs).multi_scale_inference(model, x, scales, flip)
        CASES[name] = {"cityscapes": cs, "base_size": base_size, "crop": list(crop),
                       "scales": scales, "flip": flip}
        put(name, "pred", pred.numpy())
    put("infer", "image", x.numpy())
    put("infer", "w", w.numpy())
    put("infer", "b", b.numpy())

    meta = {k: json.dumps(v, sort_keys=True) for k, v in CASES.items()}
    meta["_generator"] = (f"tools/gen_seg_task_reference.py, torch {torch.__version__}, "
                          f"OpenCV {cv2.__version__}")
    write_safetensors(args.out, TENSORS, meta)
    print(f"{args.out}: {len(CASES)} cases, {len(TENSORS)} tensors, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
