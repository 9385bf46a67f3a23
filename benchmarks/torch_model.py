#!/usr/bin/env python3
"""PyTorch peer of benchmarks/bench_model: the HRNet of tools/gen_model_reference.py (same
architecture and key names as ours) timed on the same input: a training step and an inference
forward. The step is the task's: pose (--head pose: the heatmap loss, Adam) or classification
(--head cls: cross-entropy, SGD with Nesterov momentum and weight decay) or segmentation (--head
seg: logits upsampled to the labels' size, cross-entropy with the Cityscapes class weights and
ignore label 255, SGD with momentum and weight decay) or detection (--head det: HRNet-FCOS, the
backbone here plus HRFPN and FCOSHead written to equal the official modules of HRNet/HRNet-FCOS;
the FCOS loss of its loss.py on the dense targets of bench_model's fixed boxes (DET_BOXES, assigned
by loss.py's rule), the SGD groups of its make_optimizer: biases at 2x the rate, no weight decay;
inference = the head's outputs, no post-processing), as bench_model's. CPU: eager fp32 with
--threads threads.
CUDA: eager with channels_last + cudnn.benchmark (+ autocast with --amp), and torch.compile.
Prints lines "RESULT <key> <value>" that bench_model reads (times in ms, median of --steps).

--latency-batch N adds inference at batch N (keys latency_eager_ms, latency_compiled_ms; the
compiled one with mode="reduce-overhead", i.e. CUDA graphs, as our captured graph);
--no-throughput leaves out the cases at --batch.
--ready-file F --go-file G (tools/window/run.sh): the cases come in groups (0: all but the
compiled latency case, 1: that one); a group's cases are warmed up first (torch.compile compiles,
cudnn.benchmark chooses), then F.<group> is created and the peer waits for G.<group> before
timing them, and creates F.<group>.done after (F.all at the end): it compiles in the
background while other GPU work runs, and is timed alone.
"""
import argparse
import os
import statistics
import sys
import time

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from gen_model_reference import BLOCKS, HRNet, official  # noqa: E402


CITYSCAPES_WEIGHTS = [0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786,
                      1.0023, 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529,
                      1.0507]


# ----------------------------------------------------------------------------- detection
# HRNet-FCOS's neck and head, written to equal the official modules
# (maskrcnn_benchmark/modeling/backbone/hrfpn.py HRFPN with its defaults: no normalisation, AVG
# pooling, a conv per level; modeling/rpn/fcos/fcos.py FCOSHead; layers/scale.py Scale), with
# their parameter names.
class HRFPN(nn.Module):
    def __init__(self, in_channels, out_channels, conv_stride, num_level):
        super().__init__()
        self.num_level = num_level
        self.reduction_conv = nn.Sequential(nn.Conv2d(sum(in_channels), out_channels, 1))
        self.fpn_conv = nn.ModuleList([nn.Conv2d(out_channels, out_channels, 3, conv_stride, 1)
                                       for _ in range(num_level)])

    def forward(self, inputs):
        outs = [inputs[0]] + [F.interpolate(inputs[i], scale_factor=2 ** i, mode="bilinear",
                                            align_corners=False)
                              for i in range(1, len(inputs))]
        out = self.reduction_conv(torch.cat(outs, dim=1))
        outs = [out] + [F.avg_pool2d(out, kernel_size=2 ** i, stride=2 ** i)
                        for i in range(1, self.num_level)]
        return [self.fpn_conv[i](outs[i]) for i in range(self.num_level)]


class Scale(nn.Module):
    def __init__(self, init_value=1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.FloatTensor([init_value]))

    def forward(self, x):
        return x * self.scale


class FCOSHead(nn.Module):
    def __init__(self, in_channels, num_classes, num_convs, prior_prob, num_level):
        super().__init__()
        cls_tower, bbox_tower = [], []
        for _ in range(num_convs):
            for tower in (cls_tower, bbox_tower):
                tower += [nn.Conv2d(in_channels, in_channels, 3, 1, 1),
                          nn.GroupNorm(32, in_channels), nn.ReLU()]
        self.cls_tower = nn.Sequential(*cls_tower)
        self.bbox_tower = nn.Sequential(*bbox_tower)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, 1, 1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, 1, 1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, 1, 1)
        for modules in (self.cls_tower, self.bbox_tower, self.cls_logits, self.bbox_pred,
                        self.centerness):
            for m in modules.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=0.01)
                    nn.init.constant_(m.bias, 0)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_level)])

    def forward(self, x):
        logits, bbox_reg, centerness = [], [], []
        for l, feature in enumerate(x):
            cls_tower = self.cls_tower(feature)
            logits.append(self.cls_logits(cls_tower))
            centerness.append(self.centerness(cls_tower))
            bbox_reg.append(torch.exp(self.scales[l](self.bbox_pred(self.bbox_tower(feature)))))
        return logits, bbox_reg, centerness


# bench_model's kDetBoxes: x1, y1, x2, y2 in thousandths of the input's width and height (pixel
# = v * W // 1000; x2, y2 clamped to W - 1, H - 1), label
DET_BOXES = [(100, 150, 130, 260, 1), (300, 200, 330, 240, 3), (700, 100, 760, 180, 10),
             (200, 600, 260, 700, 18), (400, 400, 520, 700, 1), (800, 500, 950, 900, 3),
             (50, 300, 400, 950, 62), (550, 50, 980, 600, 57), (20, 30, 980, 980, 7)]
INF = 100000000


def det_level_sizes(h, w, levels, conv_stride):
    """models::det_level_sizes: the stem's two stride-2 convs, level l pooled by 2^l (floor),
    then HRFPN's 3x3 conv of stride conv_stride."""
    conv = lambda n, s: (n - 1) // s + 1  # noqa: E731
    h0, w0 = conv(conv(h, 2), 2), conv(conv(w, 2), 2)
    return [(conv(h0 // 2 ** l, conv_stride), conv(w0 // 2 ** l, conv_stride))
            for l in range(levels)]


def det_targets(h, w, levels, conv_stride, num_classes):
    """One image's dense FCOS targets of DET_BOXES (loss.py compute_locations,
    compute_targets_for_locations and compute_centerness_targets, float32) over the P locations,
    level-major: labels [P] i64, reg [P,4], centerness [P]; and the level sizes."""
    sizes = det_level_sizes(h, w, levels, conv_stride)
    locs, ranges = [], []
    for l, (lh, lw) in enumerate(sizes):
        stride = 4 * 2 ** l * conv_stride
        sy, sx = torch.meshgrid(torch.arange(0, lh * stride, stride, dtype=torch.float32),
                                torch.arange(0, lw * stride, stride, dtype=torch.float32),
                                indexing="ij")
        locs.append(torch.stack([sx.reshape(-1), sy.reshape(-1)], 1) + stride // 2)
        lo = -1 if l == 0 else 64 * 2 ** (l - 1)
        hi = INF if l == levels - 1 else 64 * 2 ** l
        ranges.append(torch.tensor([[lo, hi]], dtype=torch.float32).expand(lh * lw, 2))
    pts, ranges = torch.cat(locs), torch.cat(ranges)
    boxes = torch.tensor([[x1 * w // 1000, y1 * h // 1000, min(x2 * w // 1000, w - 1),
                           min(y2 * h // 1000, h - 1)] for x1, y1, x2, y2, _ in DET_BOXES],
                         dtype=torch.float32)
    box_labels = torch.tensor([min(b[4], num_classes) for b in DET_BOXES])
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)  # BoxList.area
    xs, ys = pts[:, 0], pts[:, 1]
    reg = torch.stack([xs[:, None] - boxes[:, 0][None], ys[:, None] - boxes[:, 1][None],
                       boxes[:, 2][None] - xs[:, None], boxes[:, 3][None] - ys[:, None]], 2)
    in_box = reg.min(dim=2)[0] > 0
    mx = reg.max(dim=2)[0]
    cared = (mx >= ranges[:, [0]]) & (mx <= ranges[:, [1]])
    to_area = area[None].repeat(len(pts), 1)
    to_area[in_box == 0] = INF
    to_area[cared == 0] = INF
    min_area, inds = to_area.min(dim=1)
    reg = reg[range(len(pts)), inds]
    labels = box_labels[inds]
    labels[min_area == INF] = 0
    ctr = torch.zeros(len(pts))
    pos = labels > 0
    lr, tb = reg[pos][:, [0, 2]], reg[pos][:, [1, 3]]
    ctr[pos] = torch.sqrt((lr.min(dim=-1)[0] / lr.max(dim=-1)[0]) *
                          (tb.min(dim=-1)[0] / tb.max(dim=-1)[0]))
    return labels, reg, ctr, sizes


def sigmoid_focal_loss(logits, targets, gamma, alpha):
    """layers/sigmoid_focal_loss.py sigmoid_focal_loss_cpu, summed (SigmoidFocalLoss)."""
    num_classes = logits.shape[1]
    class_range = torch.arange(1, num_classes + 1, dtype=targets.dtype,
                               device=targets.device).unsqueeze(0)
    t = targets.unsqueeze(1)
    p = torch.sigmoid(logits)
    term1 = (1 - p) ** gamma * torch.log(p)
    term2 = p ** gamma * torch.log(1 - p)
    return (-(t == class_range).float() * term1 * alpha
            - ((t != class_range) * (t >= 0)).float() * term2 * (1 - alpha)).sum()


def iou_loss(pred, target, weight):
    """layers/iou_loss.py IOULoss."""
    target_area = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    pred_area = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    w_int = torch.min(pred[:, 0], target[:, 0]) + torch.min(pred[:, 2], target[:, 2])
    h_int = torch.min(pred[:, 3], target[:, 3]) + torch.min(pred[:, 1], target[:, 1])
    inter = w_int * h_int
    union = target_area + pred_area - inter
    losses = -torch.log((inter + 1.0) / (union + 1.0))
    return (losses * weight).sum() / weight.sum()


def fcos_loss(outs, labels_flat, reg_flat, levels, n, gamma=2.0, alpha=0.25):
    """modeling/rpn/fcos/loss.py FCOSLossComputation.__call__ from prepare_targets' output
    (labels_flat [L*N*hw] i64, reg_flat [.., 4], level-first as there): the three losses, summed
    as the official trainer sums the loss dict."""
    cls, reg, ctr = outs[:levels], outs[levels:2 * levels], outs[2 * levels:]
    c = cls[0].size(1)
    cls_f = torch.cat([y.permute(0, 2, 3, 1).reshape(-1, c) for y in cls])
    reg_f = torch.cat([y.permute(0, 2, 3, 1).reshape(-1, 4) for y in reg])
    ctr_f = torch.cat([y.reshape(-1) for y in ctr])
    pos = torch.nonzero(labels_flat > 0).squeeze(1)
    cls_loss = sigmoid_focal_loss(cls_f, labels_flat.int(), gamma, alpha) / (pos.numel() + n)
    reg_f, reg_t, ctr_f = reg_f[pos], reg_flat[pos], ctr_f[pos]
    lr, tb = reg_t[:, [0, 2]], reg_t[:, [1, 3]]
    ctr_t = torch.sqrt((lr.min(dim=-1)[0] / lr.max(dim=-1)[0]) *
                       (tb.min(dim=-1)[0] / tb.max(dim=-1)[0]))
    reg_loss = iou_loss(reg_f, reg_t, ctr_t)
    ctr_loss = F.binary_cross_entropy_with_logits(ctr_f, ctr_t)
    return cls_loss + reg_loss + ctr_loss


def heatmap_loss(pred, gt, w):
    # JointsMSELoss(use_target_weight=True): mean over joints of 0.5 * MSE(w*pred, w*gt)
    w = w.reshape(w.shape[0], w.shape[1], 1, 1)
    return 0.5 * torch.mean((pred * w - gt * w) ** 2)


def sync(cuda):
    if cuda:
        torch.cuda.synchronize()


def timeit(fn, steps, cuda):
    t = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(cuda)
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


def log(msg):
    print(f"peer: {msg}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width-base", type=int, default=32)
    ap.add_argument("--head", default="pose", choices=["pose", "cls", "seg", "det"])
    ap.add_argument("--classes", type=int, default=1000, help="cls/seg: the number of classes")
    ap.add_argument("--align-corners", action="store_true", help="seg: MODEL.ALIGN_CORNERS")
    ap.add_argument("--head-channels", default="32,64,128,256", help="cls: the head's widths")
    ap.add_argument("--head-features", type=int, default=2048, help="cls: the head's features")
    ap.add_argument("--det-channels", type=int, default=256, help="det: HRFPN's width")
    ap.add_argument("--det-levels", type=int, default=5, help="det: pyramid levels")
    ap.add_argument("--det-conv-stride", type=int, default=2, help="det: HRFPN's CONV_STRIDE")
    ap.add_argument("--fcos-convs", type=int, default=4, help="det: MODEL.FCOS.NUM_CONVS")
    ap.add_argument("--prior-prob", type=float, default=0.01, help="det: MODEL.FCOS.PRIOR_PROB")
    ap.add_argument("--norm-eval", action="store_true",
                    help="det: backbone batch norm in eval mode while training")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-throughput", action="store_true", help="leave out the cases at --batch")
    ap.add_argument("--latency-batch", type=int, default=0, help="also inference at this batch")
    ap.add_argument("--latency-steps", type=int, default=50)
    ap.add_argument("--ready-file", default="", help="created once every case is warmed up")
    ap.add_argument("--go-file", default="", help="timing starts once this file exists")
    ap.add_argument("--go-timeout", type=float, default=1800.0)
    a = ap.parse_args()
    cuda = a.device == "cuda"
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    amp_dtype = {"bf16": torch.bfloat16, "f16": torch.float16}.get(a.amp)
    if cuda:
        torch.backends.cudnn.benchmark = True
        log(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
            f"{torch.cuda.get_device_name()}")

    class Net(torch.nn.Module):
        # the reference model returns a list of head outputs; pose and cls heads have one; det:
        # the backbone, HRFPN and FCOSHead, every level's class logits, box distances and
        # centerness logits
        def __init__(self):
            super().__init__()
            if a.head == "det":
                spec = official("det", a.width_base)
                self.net = HRNet(spec)
                last = spec["stages"][-1]
                pre = [c * BLOCKS[last["block"]].expansion for c in last["channels"]]
                self.fpn = HRFPN(pre, a.det_channels, a.det_conv_stride, a.det_levels)
                self.head = FCOSHead(a.det_channels, a.classes, a.fcos_convs, a.prior_prob,
                                     a.det_levels)
                return
            if a.head == "seg":
                spec = official("seg", a.width_base, num_classes=a.classes,
                                align_corners=a.align_corners)
            elif a.head == "cls":
                spec = official("cls", a.width_base,
                                cls_head_channels=[int(c) for c in a.head_channels.split(",")],
                                cls_features=a.head_features, num_classes=a.classes)
            else:
                spec = official("pose", a.width_base, num_joints=17)
            self.net = HRNet(spec)

        def train(self, mode=True):  # det: HighResolutionNet(norm_eval=True).train
            super().train(mode)
            if mode and a.head == "det" and a.norm_eval:
                for m in self.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.eval()
            return self

        def forward(self, x):
            if a.head == "det":
                cls, reg, ctr = self.head(self.fpn(self.net.backbone(x)))
                return list(cls) + list(reg) + list(ctr)
            y = self.net(x)
            return y[0] if isinstance(y, (list, tuple)) else y

    def build():
        return Net().to(dev).to(memory_format=fmt)

    def autocast():
        return torch.autocast(a.device, dtype=amp_dtype, enabled=amp_dtype is not None)

    # every case: (group, key, mode "train"/"eval", model, fn, steps). Group by group, its cases
    # are warmed up, then timed (after the handshake of --ready-file/--go-file, if given): group 0
    # holds everything but the compiled latency case, whose extra compile is group 1, so that
    # the table's figures need not wait for it.
    cases = []
    heat_shape = (a.batch, 17, a.height // 4, a.width // 4)  # the pose head: 17 maps at 1/4

    def add_throughput(model, tag):
        x = torch.randn(a.batch, 3, a.height, a.width, device=dev).to(memory_format=fmt)
        if a.head == "det":
            # make_optimizer's groups ("bias" in the name: BIAS_LR_FACTOR 2, WEIGHT_DECAY_BIAS 0)
            named = list(model.named_parameters())
            bias = [p for k, p in named if "bias" in k]
            rest = [p for k, p in named if "bias" not in k]
            opt = torch.optim.SGD([{"params": rest, "lr": 0.01, "weight_decay": 1e-4},
                                   {"params": bias, "lr": 0.02, "weight_decay": 0.0}],
                                  lr=0.01, momentum=0.9)
            labels, reg, ctr, sizes = det_targets(a.height, a.width, a.det_levels,
                                                  a.det_conv_stride, a.classes)
            counts, off = [], 0
            for lh, lw in sizes:
                counts.append(int((labels[off:off + lh * lw] > 0).sum()))
                off += lh * lw
            log(f"det targets: {len(DET_BOXES)} boxes, {len(labels)} locations, positives per "
                f"level {'/'.join(map(str, counts))}, centerness sum {float(ctr.sum()):.4f} "
                f"(per image)")
            log(f"det optimizer: SGD, {len(named)} parameter tensors, {len(bias)} in the bias "
                f"group")
            # prepare_targets' layout: level-first, then image, then location
            lab_f, reg_f, off = [], [], 0
            for lh, lw in sizes:
                lab_f.append(labels[off:off + lh * lw].repeat(a.batch))
                reg_f.append(reg[off:off + lh * lw].repeat(a.batch, 1))
                off += lh * lw
            lab_f, reg_f = torch.cat(lab_f).to(dev), torch.cat(reg_f).to(dev)

            def loss_of(ys):
                for y, (lh, lw) in zip(ys, sizes):
                    assert y.shape[2:] == (lh, lw), (y.shape, lh, lw)
                return fcos_loss([y.float() for y in ys], lab_f, reg_f, a.det_levels, a.batch)
        elif a.head == "seg":
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            idx = torch.arange(a.batch * a.height * a.width, device=dev)
            labels = ((idx * 7919 // 13) % a.classes).reshape(a.batch, a.height, a.width)
            labels[(idx % 10 == 9).reshape(a.batch, a.height, a.width)] = 255
            cw = torch.ones(a.classes, device=dev)
            cw[:19] = torch.tensor(CITYSCAPES_WEIGHTS[:a.classes], device=dev)

            def loss_of(y):
                y = torch.nn.functional.interpolate(y.float(), size=(a.height, a.width),
                                                    mode="bilinear", align_corners=a.align_corners)
                return torch.nn.functional.cross_entropy(y, labels, weight=cw, ignore_index=255)
        elif a.head == "cls":
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4,
                                  nesterov=True)
            labels = torch.tensor([(i * 7919) % a.classes for i in range(a.batch)], device=dev)

            def loss_of(y):
                return torch.nn.functional.cross_entropy(y.float(), labels)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            gt = torch.randn(heat_shape, device=dev) * 0.1
            w = torch.ones(a.batch, heat_shape[1], device=dev)

            def loss_of(y):
                return heatmap_loss(y.float(), gt, w)

        def train():
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_of(model(x))
            loss.backward()
            opt.step()

        def infer():
            with torch.no_grad(), autocast():
                model(x)

        cases.append((0, f"train_{tag}_ms", "train", model, train, a.steps))
        cases.append((0, f"infer_{tag}_ms", "eval", model, infer, a.steps))

    def add_latency(model, tag, group):
        x = torch.randn(a.latency_batch, 3, a.height, a.width, device=dev).to(memory_format=fmt)

        def infer():
            with torch.no_grad(), autocast():
                model(x)

        cases.append((group, f"latency_{tag}_ms", "eval", model, infer, a.latency_steps))

    compile_ = cuda and not a.no_compile
    if not a.no_throughput:
        add_throughput(build(), "eager")
    if a.latency_batch > 0:
        add_latency(build(), "eager", 0)
    if compile_ and not a.no_throughput:
        add_throughput(torch.compile(build()), "compiled")
    if compile_ and a.latency_batch > 0:
        add_latency(torch.compile(build(), mode="reduce-overhead"), "compiled", 1)

    def handshake(group):
        if a.ready_file:
            if cuda:
                torch.cuda.empty_cache()
            tmp = f"{a.ready_file}.{group}.tmp"
            with open(tmp, "w") as f:
                f.write("ready\n")
            os.replace(tmp, f"{a.ready_file}.{group}")
            log(f"group {group} ready; waiting for {a.go_file}.{group}")
        if a.go_file:
            t0 = time.perf_counter()
            while not os.path.exists(f"{a.go_file}.{group}"):
                if time.perf_counter() - t0 > a.go_timeout:
                    log(f"no {a.go_file}.{group} after {a.go_timeout:.0f} s: group {group} not timed")
                    sys.exit(3)
                time.sleep(0.1)

    def mark(suffix):
        if a.ready_file:
            open(f"{a.ready_file}.{suffix}", "w").close()

    for group in sorted({c[0] for c in cases}):
        mine = [c for c in cases if c[0] == group]
        # warm-up: compiles and chooses algorithms
        for _, key, mode, model, fn, _ in mine:
            t0 = time.perf_counter()
            getattr(model, mode)()
            for _ in range(max(1, a.warmup)):
                fn()
            sync(cuda)
            log(f"{key[:-3]} warmed up in {time.perf_counter() - t0:.1f} s")
        handshake(group)
        for _, key, mode, model, fn, steps in mine:
            getattr(model, mode)()
            fn()  # after a mode switch: the first call may check guards or re-record a graph
            sync(cuda)
            if cuda and key == "train_eager_ms":  # the peak of the timed steps, as ours
                torch.cuda.reset_peak_memory_stats()
            print(f"RESULT {key} {timeit(fn, steps, cuda):.3f}", flush=True)
            if cuda and key == "train_eager_ms":
                print(f"RESULT train_peak_gb {torch.cuda.max_memory_allocated() / 1e9:.3f}", flush=True)
        mark(f"{group}.done")
    mark("all")
    log("all timed")


if __name__ == "__main__":
    main()
