#!/usr/bin/python3
"""PyTorch reference data for the HRNet-FCOS detector (tests/test_fcos_model.cpp).

Run:  /usr/bin/python3 tools/gen_fcos_reference.py --out tests/data [--official REPO]
Needs torch (1.13, CPU) and numpy, and a bare git mirror of HRNet/HRNet-FCOS (default
/work/.mirror/HRNet+HRNet-FCOS/repo): the neck, head and loss are the official modules
themselves (modeling/backbone/hrfpn.py HRFPN, modeling/rpn/fcos/fcos.py FCOSHead,
modeling/rpn/fcos/loss.py FCOSLossComputation with layers/iou_loss.py, the CPU path of
layers/sigmoid_focal_loss.py, layers/scale.py and structures/bounding_box.py), read from the mirror
into a throw-away package (the compiled maskrcnn_benchmark._C is replaced by an empty module:
only its CUDA kernels use it). The backbone is tools/gen_model_reference.py's HRNet (the key
names of the authors' repositories), small so that the file stays small.

model_fcos.safetensors (f32 unless said; computed in float64 on float32-rounded values):
  state.<key>         the state dict as an official checkpoint has it: module.backbone.body.*,
                      module.backbone.fpn.*, module.rpn.head.* (num_batches_tracked i64)
  input               [N,3,H,W]
  out_eval.<i>        the head's outputs in eval mode: cls logits of every level, then the box
                      distances of every level, then the centerness logits of every level
  out_train.<i>       the same in training mode (HighResolutionNet(norm_eval=True): the backbone's
                      batch norm stays in eval mode)
  boxes.<n>, box_labels.<n>   image n's ground truth (xyxy, contiguous labels)
  labels [N,P] i64, reg_targets [N,4,P], centerness [N,P], positive [N,P]: the official targets
                      (prepare_targets / compute_centerness_targets) per image, level-major
  loss_cls, loss_reg, loss_centerness, loss   the official losses and their sum
  grad.<key>          d loss / d parameter (our key names: no prefix), every parameter
  after_sgd.<key>     every parameter after one step of the official make_optimizer's SGD
                      (BASE_LR 0.01, BIAS_LR_FACTOR 2, WEIGHT_DECAY 1e-4, WEIGHT_DECAY_BIAS 0,
                      MOMENTUM 0.9) from those gradients
  lr_steps i64, lr_constant, lr_linear   WarmupMultiStepLR's rate at those iterations as the
                      official trainer steps it (STEPS (120000, 160000), 500 warm-up iterations
                      at 1/3, constant or linear)
__metadata__: spec (JSON), keys (the official state-dict keys, PyTorch order), params.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_model_reference as gm  # noqa: E402

OFFICIAL_FILES = [
    "maskrcnn_benchmark/solver/build.py",
    "maskrcnn_benchmark/solver/lr_scheduler.py",
    "maskrcnn_benchmark/layers/scale.py",
    "maskrcnn_benchmark/layers/iou_loss.py",
    "maskrcnn_benchmark/layers/sigmoid_focal_loss.py",
    "maskrcnn_benchmark/structures/bounding_box.py",
    "maskrcnn_benchmark/modeling/backbone/hrfpn.py",
    "maskrcnn_benchmark/modeling/rpn/fcos/fcos.py",
    "maskrcnn_benchmark/modeling/rpn/fcos/loss.py",
]


def load_official(repo):
    """The official modules, imported from a package written from the mirror's files."""
    root = tempfile.mkdtemp(prefix="fcos_ref_")
    for path in OFFICIAL_FILES:
        text = subprocess.run(["git", "-C", repo, "show", "HEAD:" + path], check=True,
                              capture_output=True, text=True).stdout
        if path.endswith("fcos/fcos.py"):  # the post-processor is not needed here
            text = text.replace("from .inference import make_fcos_postprocessor\n", "")
            text = text.replace("box_selector_test = make_fcos_postprocessor(cfg)",
                                "box_selector_test = None")
        dst = os.path.join(root, path)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "w") as f:
            f.write(text)
    pkg = os.path.join(root, "maskrcnn_benchmark")
    for d, _, _ in os.walk(pkg):
        init = os.path.join(d, "__init__.py")
        if not os.path.exists(init):
            open(init, "w").close()
    with open(os.path.join(pkg, "layers", "__init__.py"), "w") as f:
        f.write("from .scale import Scale\nfrom .iou_loss import IOULoss\n"
                "from .sigmoid_focal_loss import SigmoidFocalLoss\n")
    sys.modules["maskrcnn_benchmark._C"] = types.ModuleType("maskrcnn_benchmark._C")
    sys.path.insert(0, root)
    import maskrcnn_benchmark
    maskrcnn_benchmark._C = sys.modules["maskrcnn_benchmark._C"]
    from maskrcnn_benchmark.modeling.backbone.hrfpn import HRFPN
    from maskrcnn_benchmark.modeling.rpn.fcos.fcos import FCOSModule
    from maskrcnn_benchmark.modeling.rpn.fcos.loss import FCOSLossComputation
    from maskrcnn_benchmark.structures.bounding_box import BoxList
    from maskrcnn_benchmark.solver.build import make_optimizer, make_lr_scheduler
    return HRFPN, FCOSModule, FCOSLossComputation, BoxList, make_optimizer, make_lr_scheduler


def cfg_node(d):
    """A yacs-like attribute tree from nested dicts."""
    n = types.SimpleNamespace()
    for k, v in d.items():
        setattr(n, k, cfg_node(v) if isinstance(v, dict) else v)
    return n


class Detector(torch.nn.Module):
    """GeneralizedRCNN's layout: backbone = Sequential(body, fpn), rpn = FCOSModule."""

    def __init__(self, spec, HRFPN, FCOSModule, cfg):
        super().__init__()
        body = gm.HRNet(spec)
        pre = [s * gm.BLOCKS[spec["stages"][-1]["block"]].expansion
               for s in spec["stages"][-1]["channels"]]
        fpn = HRFPN(in_channels=pre, out_channels=spec["det_channels"],
                    conv_stride=spec["det_conv_stride"], num_level=spec["det_levels"])
        self.backbone = torch.nn.Sequential()
        self.backbone.add_module("body", body)
        self.backbone.add_module("fpn", fpn)
        self.rpn = FCOSModule(cfg, spec["det_channels"])

    def train(self, mode=True):  # HighResolutionNet(norm_eval=True).train
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x):
        feats = self.backbone.fpn(self.backbone.body.backbone(x))
        cls, reg, ctr = self.rpn.head(feats)
        return feats, list(cls) + list(reg) + list(ctr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--official", default="/work/.mirror/HRNet+HRNet-FCOS/repo")
    a = ap.parse_args()
    torch.set_num_threads(2)
    (HRFPN, FCOSModule, FCOSLossComputation, BoxList, make_optimizer,
     make_lr_scheduler) = load_official(a.official)

    levels = 5
    ranges = [[-1, 16], [16, 32], [32, 48], [48, 64], [64, 100000000]]
    spec = gm.small("det", tiny=True, det_channels=32, det_levels=levels, det_conv_stride=2,
                    num_classes=3, fcos_num_convs=2, prior_prob=0.01, norm_eval=True)
    cfg = cfg_node({"MODEL": {"FCOS": {
        "NUM_CLASSES": spec["num_classes"] + 1, "FPN_STRIDES": [8, 16, 32, 64, 128],
        "NUM_CONVS": spec["fcos_num_convs"], "PRIOR_PROB": spec["prior_prob"],
        "LOSS_GAMMA": 2.0, "LOSS_ALPHA": 0.25, "TARGET_ASSIGN": ranges,
        "INFERENCE_TH": 0.05, "NMS_TH": 0.6, "PRE_NMS_TOP_N": 1000}},
        "TEST": {"DETECTIONS_PER_IMG": 100}})
    spec["target_assign"] = ranges

    seed = 31
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Detector(spec, HRFPN, FCOSModule, cfg)
    model = model.double()
    shape = (2, 3, 128, 96)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).float().double()
    # non-trivial float32-representable values (gm.randomise's recipe; the running statistics
    # drawn directly, since norm_eval training never updates them)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale"):
                p.copy_(0.8 + 0.4 * torch.rand(p.shape, generator=gen, dtype=torch.float64))
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64)
                        * (1.0 / fan_in) ** 0.5)
            elif name.endswith("bias"):
                p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) - 0.5) * 0.4)
            else:
                p.copy_(0.6 + 0.8 * torch.rand(p.shape, generator=gen, dtype=torch.float64))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen,
                                                 dtype=torch.float64) * 0.2)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen,
                                                     dtype=torch.float64))
                m.num_batches_tracked.fill_(int(torch.randint(1, 9, (1,), generator=gen)))
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.float().double())

    sd = {"module." + k: v.clone() for k, v in model.state_dict().items()}
    tensors = [("state." + k, gm.f32(v)) for k, v in sd.items()]
    tensors.append(("input", gm.f32(x)))

    model.eval()
    with torch.no_grad():
        _, outs = model(x)
        for i, y in enumerate(outs):
            tensors.append((f"out_eval.{i}", gm.f32(y)))

    # ground truth: boxes of every size (some on level-range boundaries), two sharing an area
    h, w = shape[2], shape[3]
    targets, per_image = [], []
    for n in range(shape[0]):
        k = 6 + 3 * n
        x1 = torch.randint(0, w - 8, (k,), generator=gen).double()
        y1 = torch.randint(0, h - 8, (k,), generator=gen).double()
        bw = torch.randint(4, 90, (k,), generator=gen).double()
        bh = torch.randint(4, 90, (k,), generator=gen).double()
        boxes = torch.stack([x1, y1, (x1 + bw).clamp(max=w - 1), (y1 + bh).clamp(max=h - 1)], 1)
        boxes[1] = boxes[0] + torch.tensor([3.0, 2.0, 3.0, 2.0], dtype=torch.float64)  # same area
        boxes[1, 2:] = boxes[1, 2:].clamp(max=w - 1)
        labels = torch.randint(1, spec["num_classes"] + 1, (k,), generator=gen)
        boxes = boxes.float()  # as the official data (float32 boxes; integers here, exact)
        b = BoxList(boxes, (w, h), mode="xyxy")
        b.add_field("labels", labels)
        targets.append(b)
        tensors += [(f"boxes.{n}", gm.f32(boxes)), (f"box_labels.{n}", labels.numpy())]

    model.train()
    model.zero_grad()
    feats, outs = model(x)
    for i, y in enumerate(outs):
        tensors.append((f"out_train.{i}", gm.f32(y)))
    locations = model.rpn.compute_locations(feats)
    L = levels
    loss_eval = FCOSLossComputation(cfg)
    lc, lr, lctr = loss_eval(locations, outs[:L], outs[L:2 * L], outs[2 * L:], targets)
    loss = lc + lr + lctr
    loss.backward()

    # the dense targets, per image in level-major order
    pts = torch.cat(locations, 0)
    sizes = torch.cat([p.new_tensor(ranges[l])[None].expand(len(p), -1)
                       for l, p in enumerate(locations)], 0)
    lab, reg = loss_eval.compute_targets_for_locations(pts, targets, sizes)
    lab_t = torch.stack(lab, 0)
    reg_t = torch.stack(reg, 0)  # [N,P,4]
    ctr_t = torch.zeros(lab_t.shape, dtype=reg_t.dtype)
    pos = lab_t > 0
    ctr_t[pos] = loss_eval.compute_centerness_targets(reg_t[pos])
    reg_t = reg_t.permute(0, 2, 1).contiguous()
    tensors += [("labels", lab_t.numpy().astype(np.int64)), ("reg_targets", gm.f32(reg_t)),
                ("centerness", gm.f32(ctr_t)), ("positive", gm.f32(pos.double())),
                ("loss_cls", gm.f32(lc.reshape(()))), ("loss_reg", gm.f32(lr.reshape(()))),
                ("loss_centerness", gm.f32(lctr.reshape(()))), ("loss", gm.f32(loss.reshape(())))]
    strip = ("backbone.body.", "backbone.fpn.")
    for k, p in model.named_parameters():
        ours = k
        for s in strip:
            if ours.startswith(s):
                ours = ours[len(s):]
        tensors.append(("grad." + ours, gm.f32(p.grad)))

    # one step of the official SGD (make_optimizer: biases at BIAS_LR_FACTOR x the rate with
    # WEIGHT_DECAY_BIAS) from these gradients
    solver = cfg_node({"SOLVER": {"BASE_LR": 0.01, "BIAS_LR_FACTOR": 2, "WEIGHT_DECAY": 0.0001,
                                  "WEIGHT_DECAY_BIAS": 0, "MOMENTUM": 0.9}})
    opt = make_optimizer(solver, model)
    opt.step()
    for k, p in model.named_parameters():
        ours = k
        for s_ in strip:
            if ours.startswith(s_):
                ours = ours[len(s_):]
        tensors.append(("after_sgd." + ours, gm.f32(p)))

    # WarmupMultiStepLR as the official trainer steps it (once before each iteration), for the W32
    # file's solver (constant warm-up) and maskrcnn-benchmark's default (linear)
    at = [0, 1, 2, 250, 497, 498, 499, 500, 119998, 119999, 120000, 159999, 160000, 179999]
    tensors.append(("lr_steps", np.array(at, dtype=np.int64)))
    for method in ("constant", "linear"):
        sched_cfg = cfg_node({"SOLVER": {"STEPS": (120000, 160000), "GAMMA": 0.1,
                                         "WARMUP_FACTOR": 1.0 / 3, "WARMUP_ITERS": 500,
                                         "WARMUP_METHOD": method}})
        p0 = torch.nn.Parameter(torch.zeros(1))
        o = torch.optim.SGD([p0], lr=0.01)
        sched = make_lr_scheduler(sched_cfg, o)
        lrs = []
        for it in range(max(at) + 1):
            sched.step()  # the official trainer: before the iteration's step
            if it in at:
                lrs.append(o.param_groups[0]["lr"])
        tensors.append((f"lr_{method}", np.array(lrs, dtype=np.float64).astype(np.float32)))

    nparams = sum(p.numel() for p in model.parameters())
    meta = {"spec": json.dumps(spec), "keys": "\n".join(sd.keys()), "params": str(nparams)}
    path = os.path.join(a.out, "model_fcos.safetensors")
    gm.write_safetensors(path, tensors, meta)
    print(f"{path}: {len(tensors)} tensors, {nparams} params, positives {int(pos.sum())}, "
          f"loss {float(lc):.6f} + {float(lr):.6f} + {float(lctr):.6f}")


if __name__ == "__main__":
    main()
