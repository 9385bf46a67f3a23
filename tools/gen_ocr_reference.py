#!/usr/bin/python3
"""PyTorch reference data for the HRNetV2 + OCR segmentation head (tests/test_ocr.cpp).

Run:  /usr/bin/python3 tools/gen_ocr_reference.py --out tests/data
      /usr/bin/python3 tools/gen_ocr_reference.py --count [--official REPO]
Needs torch (1.13, CPU) and numpy; --count and the cross-check also read the official
lib/models/seg_hrnet_ocr.py from a bare git mirror of HRNet/HRNet-Semantic-Segmentation
(default /work/.mirror/HRNet+HRNet-Semantic-Segmentation/repo; skipped when absent).

The OCR classes below (SpatialGather_Module, _ObjectAttentionBlock, SpatialOCR_Module,
ModuleHelper.BNReLU) are the official ones (seg_hrnet_ocr.py) with BatchNorm2d = nn.BatchNorm2d;
the head is built in the official order on the backbone of tools/gen_model_reference.py. Before
writing anything the script checks this reproduction against the official module code itself
(when the mirror is there): the same state-dict keys in the same order, and the same outputs.

model_ocr.safetensors (f32 unless said; computed in float64 on float32-rounded values):
  state.<key>         the state dict the C++ model loads (num_batches_tracked i64)
  input               [N,3,H,W]
  out_eval.<i>        [aux, out] in eval mode
  out_train.<i>       [aux, out] with training-mode batch norm and the dropout off
  upstream.<i>        the fixed gradient of each training output
  grad.<param>        d(sum_i <out_train.i, upstream.i>) / d param, every parameter
  grad_input          the same for the input
  after.<buffer>      BN running statistics and counters after the training forward
  out_drop.1          the OCR output in training mode with Dropout2d(0.05) applying the mask
                      of the engine's generator (kernels/dropout_hash.h) at state
                      {dropout_seed, 0}, from the same starting state
__metadata__: spec (JSON), keys (state-dict keys, PyTorch order), params, dropout_seed.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_model_reference as gmr  # noqa: E402

MIRROR = "/work/.mirror/HRNet+HRNet-Semantic-Segmentation/repo"
ALIGN_CORNERS = False
BatchNorm2d = nn.BatchNorm2d


# ----------------------------------------------------------------------------- official classes
class ModuleHelper:

    @staticmethod
    def BNReLU(num_features, bn_type=None, **kwargs):
        return nn.Sequential(
            BatchNorm2d(num_features, **kwargs),
            nn.ReLU()
        )


class SpatialGather_Module(nn.Module):
    def __init__(self, cls_num=0, scale=1):
        super(SpatialGather_Module, self).__init__()
        self.cls_num = cls_num
        self.scale = scale

    def forward(self, feats, probs):
        batch_size, c, h, w = probs.size(0), probs.size(1), probs.size(2), probs.size(3)
        probs = probs.view(batch_size, c, -1)
        feats = feats.view(batch_size, feats.size(1), -1)
        feats = feats.permute(0, 2, 1)  # batch x hw x c
        probs = F.softmax(self.scale * probs, dim=2)  # batch x k x hw
        ocr_context = torch.matmul(probs, feats)\
            .permute(0, 2, 1).unsqueeze(3)  # batch x k x c
        return ocr_context


class _ObjectAttentionBlock(nn.Module):
    def __init__(self, in_channels, key_channels, scale=1, bn_type=None):
        super(_ObjectAttentionBlock, self).__init__()
        self.scale = scale
        self.in_channels = in_channels
        self.key_channels = key_channels
        self.pool = nn.MaxPool2d(kernel_size=(scale, scale))
        self.f_pixel = nn.Sequential(
            nn.Conv2d(in_channels=self.in_channels, out_channels=self.key_channels,
                      kernel_size=1, stride=1, padding=0, bias=False),
            ModuleHelper.BNReLU(self.key_channels, bn_type=bn_type),
            nn.Conv2d(in_channels=self.key_channels, out_channels=self.key_channels,
                      kernel_size=1, stride=1, padding=0, bias=False),
            ModuleHelper.BNReLU(self.key_channels, bn_type=bn_type),
        )
        self.f_object = nn.Sequential(
            nn.Conv2d(in_channels=self.in_channels, out_channels=self.key_channels,
                      kernel_size=1, stride=1, padding=0, bias=False),
            ModuleHelper.BNReLU(self.key_channels, bn_type=bn_type),
            nn.Conv2d(in_channels=self.key_channels, out_channels=self.key_channels,
                      kernel_size=1, stride=1, padding=0, bias=False),
            ModuleHelper.BNReLU(self.key_channels, bn_type=bn_type),
        )
        self.f_down = nn.Sequential(
            nn.Conv2d(in_channels=self.in_channels, out_channels=self.key_channels,
                      kernel_size=1, stride=1, padding=0, bias=False),
            ModuleHelper.BNReLU(self.key_channels, bn_type=bn_type),
        )
        self.f_up = nn.Sequential(
            nn.Conv2d(in_channels=self.key_channels, out_channels=self.in_channels,
                      kernel_size=1, stride=1, padding=0, bias=False),
            ModuleHelper.BNReLU(self.in_channels, bn_type=bn_type),
        )

    def forward(self, x, proxy):
        batch_size, h, w = x.size(0), x.size(2), x.size(3)
        if self.scale > 1:
            x = self.pool(x)

        query = self.f_pixel(x).view(batch_size, self.key_channels, -1)
        query = query.permute(0, 2, 1)
        key = self.f_object(proxy).view(batch_size, self.key_channels, -1)
        value = self.f_down(proxy).view(batch_size, self.key_channels, -1)
        value = value.permute(0, 2, 1)

        sim_map = torch.matmul(query, key)
        sim_map = (self.key_channels**-.5) * sim_map
        sim_map = F.softmax(sim_map, dim=-1)

        # add bg context ...
        context = torch.matmul(sim_map, value)
        context = context.permute(0, 2, 1).contiguous()
        context = context.view(batch_size, self.key_channels, *x.size()[2:])
        context = self.f_up(context)
        if self.scale > 1:
            context = F.interpolate(input=context, size=(h, w), mode='bilinear',
                                    align_corners=ALIGN_CORNERS)

        return context


class ObjectAttentionBlock2D(_ObjectAttentionBlock):
    def __init__(self, in_channels, key_channels, scale=1, bn_type=None):
        super(ObjectAttentionBlock2D, self).__init__(in_channels, key_channels, scale,
                                                     bn_type=bn_type)


class SpatialOCR_Module(nn.Module):
    def __init__(self, in_channels, key_channels, out_channels, scale=1, dropout=0.1,
                 bn_type=None):
        super(SpatialOCR_Module, self).__init__()
        self.object_context_block = ObjectAttentionBlock2D(in_channels, key_channels, scale,
                                                           bn_type)
        _in_channels = 2 * in_channels

        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(_in_channels, out_channels, kernel_size=1, padding=0, bias=False),
            ModuleHelper.BNReLU(out_channels, bn_type=bn_type),
            nn.Dropout2d(dropout)
        )

    def forward(self, feats, proxy_feats):
        context = self.object_context_block(feats, proxy_feats)

        output = self.conv_bn_dropout(torch.cat([context, feats], 1))

        return output


# ----------------------------------------------------------------------------- the model
class HRNetOCR(gmr.HRNet):
    """The backbone of gen_model_reference.HRNet (seg: bilinear fuse) with the official OCR
    head in place of last_layer, registered in the official order."""

    def __init__(self, spec):
        super().__init__(dict(spec, head="seg"))
        del self.last_layer
        last_inp_channels = sum(self.stage4[-1].out_channels)
        ocr_mid_channels, ocr_key_channels = spec["ocr_mid"], spec["ocr_key"]
        num_classes = spec["num_classes"]
        # as HighResolutionNet.__init__ in seg_hrnet_ocr.py
        self.conv3x3_ocr = nn.Sequential(
            nn.Conv2d(last_inp_channels, ocr_mid_channels,
                      kernel_size=3, stride=1, padding=1),
            BatchNorm2d(ocr_mid_channels),
            nn.ReLU(inplace=True),
        )
        self.ocr_gather_head = SpatialGather_Module(num_classes)
        self.ocr_distri_head = SpatialOCR_Module(in_channels=ocr_mid_channels,
                                                 key_channels=ocr_key_channels,
                                                 out_channels=ocr_mid_channels,
                                                 scale=1,
                                                 dropout=0.05,
                                                 )
        self.cls_head = nn.Conv2d(
            ocr_mid_channels, num_classes, kernel_size=1, stride=1, padding=0, bias=True)
        self.aux_head = nn.Sequential(
            nn.Conv2d(last_inp_channels, last_inp_channels,
                      kernel_size=1, stride=1, padding=0),
            BatchNorm2d(last_inp_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(last_inp_channels, num_classes,
                      kernel_size=1, stride=1, padding=0, bias=True)
        )

    def forward(self, x):
        global ALIGN_CORNERS
        ALIGN_CORNERS = self.ac
        ys = self.backbone(x)
        size = ys[0].shape[2:]
        feats = torch.cat([ys[0]] + [F.interpolate(y, size=size, mode="bilinear",
                                                   align_corners=self.ac) for y in ys[1:]], 1)
        out_aux = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        context = self.ocr_gather_head(feats, out_aux)
        feats = self.ocr_distri_head(feats, context)
        out = self.cls_head(feats)
        return [out_aux, out]


# ----------------------------------------------------------------------------- the official code
def official_module(mirror):
    """lib/models/seg_hrnet_ocr.py from the mirror, imported with bn_helper's non-sync branch
    (nn.BatchNorm2d; the counts and the arithmetic are those of SyncBatchNorm on one process)."""
    if not os.path.isdir(mirror):
        return None
    try:
        src = subprocess.run(["git", "-C", mirror, "show", "HEAD:lib/models/seg_hrnet_ocr.py"],
                             check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    helper = types.ModuleType("bn_helper")
    helper.BatchNorm2d = helper.BatchNorm2d_class = nn.BatchNorm2d
    helper.relu_inplace = True
    sys.modules["bn_helper"] = helper
    if not hasattr(np, "int"):
        np.int = int  # removed in numpy 1.24; the official code calls np.int(np.sum(...))
    mod = types.ModuleType("seg_hrnet_ocr")
    exec(compile(src.replace("from .bn_helper import", "from bn_helper import"),
                 "seg_hrnet_ocr.py", "exec"), mod.__dict__)
    return mod


class Node(dict):
    __getattr__ = dict.__getitem__


def official_config(spec):
    """The attributes HighResolutionNet(config) reads, from a spec of this script."""
    def stage(st):
        return {"NUM_MODULES": st["modules"], "NUM_BRANCHES": len(st["channels"]),
                "BLOCK": st["block"], "NUM_BLOCKS": st["blocks"],
                "NUM_CHANNELS": st["channels"], "FUSE_METHOD": "SUM"}
    s1 = spec["stage1"]
    extra = {"STAGE1": {"NUM_MODULES": 1, "NUM_BRANCHES": 1, "BLOCK": s1["block"],
                        "NUM_BLOCKS": [s1["blocks"]], "NUM_CHANNELS": [s1["planes"]],
                        "FUSE_METHOD": "SUM"}}
    for i, st in enumerate(spec["stages"]):
        extra[f"STAGE{i + 2}"] = stage(st)
    return Node(MODEL=Node(EXTRA=extra, ALIGN_CORNERS=spec.get("align_corners", True),
                           OCR=Node(MID_CHANNELS=spec["ocr_mid"],
                                    KEY_CHANNELS=spec["ocr_key"])),
                DATASET=Node(NUM_CLASSES=spec["num_classes"]))


def cross_check(official, spec, shape):
    """The reproduction against the official module code (stem 64, as the official code fixes
    it): the same keys in the same order, the same outputs in eval and training mode."""
    spec = dict(spec, stem=64)
    torch.manual_seed(5)
    theirs = official.HighResolutionNet(official_config(spec)).double()
    ours = HRNetOCR(spec).double()
    sd = theirs.state_dict()
    assert list(sd.keys()) == list(ours.state_dict().keys()), "state-dict keys differ"
    gen = torch.Generator().manual_seed(6)
    gmr.randomise(theirs, gen, torch.randn(shape, generator=gen, dtype=torch.float64))
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    for training in (False, True):
        for m in (theirs, ours):
            m.train(training)
            m.ocr_distri_head.conv_bn_dropout[2].eval()
        with torch.no_grad():
            for a, b in zip(theirs(x), ours(x)):
                err = float((a - b).abs().max() / b.abs().max())
                assert err < 1e-12, f"outputs differ from the official code's by {err}"
    print(f"reproduction == official seg_hrnet_ocr.py ({len(sd)} keys, outputs equal)")


# ----------------------------------------------------------------------------- dropout mask
M64 = (1 << 64) - 1


def splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def dropout_mask(seed, step, n, c, p):
    """kernels/dropout_hash.h: keep (n, c) when its 24-bit uniform is >= p (float32 compare),
    scaled by the float32 1 / (1 - p)."""
    p32 = np.float32(p)
    scale = np.float32(1) / (np.float32(1) - p32)
    m = np.zeros((n, c))
    for i in range(n):
        for j in range(c):
            h = splitmix64(splitmix64(splitmix64(seed) ^ step) ^ ((i << 32) | j))
            u = (h >> 40) / 16777216.0
            m[i, j] = float(scale) if u >= float(p32) else 0.0
    return torch.from_numpy(m)


class MaskDropout(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def forward(self, x):
        return x * self.mask[:, :, None, None]


# ----------------------------------------------------------------------------- the reference
def run_case(out_dir, spec, shape, seed, dropout_seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = HRNetOCR(spec).double()
    x = torch.randn(shape, generator=gen, dtype=torch.float64).float().double()
    randomise(model, gen, torch.randn(shape, generator=gen, dtype=torch.float64))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    start = copy.deepcopy(model)  # for the dropout run: the same running statistics
    tensors = [("state." + k, gmr.f32(v)) for k, v in sd.items()]
    tensors.append(("input", gmr.f32(x)))

    model.eval()
    with torch.no_grad():
        for i, y in enumerate(model(x)):
            tensors.append((f"out_eval.{i}", gmr.f32(y)))

    model.train()
    model.ocr_distri_head.conv_bn_dropout[2].eval()  # the dropout off
    xg = x.clone().requires_grad_(True)
    outs = model(xg)
    ups = [torch.randn(y.shape, generator=gen, dtype=torch.float64).float().double()
           for y in outs]
    loss = sum((y * u).sum() for y, u in zip(outs, ups))
    loss.backward()
    for i, (y, u) in enumerate(zip(outs, ups)):
        tensors.append((f"out_train.{i}", gmr.f32(y)))
        tensors.append((f"upstream.{i}", gmr.f32(u)))
    for k, p in model.named_parameters():
        tensors.append(("grad." + k, gmr.f32(p.grad)))
    tensors.append(("grad_input", gmr.f32(xg.grad)))
    for k, b in model.named_buffers():
        tensors.append(("after." + k, gmr.f32(b)))

    start.train()
    n, c = shape[0], spec["ocr_mid"]
    start.ocr_distri_head.conv_bn_dropout[2] = MaskDropout(
        dropout_mask(dropout_seed, 0, n, c, 0.05))
    with torch.no_grad():
        tensors.append(("out_drop.1", gmr.f32(start(x)[1])))

    nparams = sum(p.numel() for p in model.parameters())
    meta = {"spec": json.dumps(spec), "keys": "\n".join(sd.keys()), "params": str(nparams),
            "dropout_seed": str(dropout_seed)}
    path = os.path.join(out_dir, "model_ocr.safetensors")
    gmr.write_safetensors(path, tensors, meta)
    print(f"{path}: {len(tensors)} tensors, {nparams} params, {os.path.getsize(path)} bytes")


def randomise(model, gen, calib):
    """gen_model_reference.randomise with the dropout off during the calibration forward."""
    model.ocr_distri_head.conv_bn_dropout[2].p = 0.0
    gmr.randomise(model, gen, calib)
    model.ocr_distri_head.conv_bn_dropout[2].p = 0.05


def small_ocr():
    """The tiny seg backbone of gen_model_reference (stem 8, widths [2,4,6,8]: 20 channels into
    the head), OCR mid 12, key 6, 5 classes; align_corners True (the seg repository's default,
    which the official OCR configs keep)."""
    return gmr.small("seg", tiny=True, num_classes=5, final_conv_kernel=1, align_corners=True,
                     ocr_mid=12, ocr_key=6)


def count(official):
    """The official W48 OCR model's parameter count (cityscapes: 19 classes; pascal context: 59),
    from the official module code and from the reproduction."""
    for classes in (19, 59):
        spec = gmr.official("seg", 48, num_classes=classes, align_corners=True, ocr_mid=512,
                            ocr_key=256)
        ours = sum(p.numel() for p in HRNetOCR(spec).parameters())
        line = f"seg_hrnet_ocr w48, {classes} classes: reproduction {ours} params"
        if official is not None:
            theirs = sum(p.numel() for p in
                         official.HighResolutionNet(official_config(spec)).parameters())
            line += f", official seg_hrnet_ocr.py {theirs}"
            assert theirs == ours
        print(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="directory for model_ocr.safetensors")
    ap.add_argument("--count", action="store_true", help="the official W48 parameter counts")
    ap.add_argument("--official", default=MIRROR, help="bare git mirror of the official repo")
    a = ap.parse_args()
    torch.set_num_threads(2)
    official = official_module(a.official)
    if official is None:
        print(f"(no official code at {a.official}: the cross-check is skipped)")
    if a.count:
        count(official)
    if a.out:
        spec = small_ocr()
        if official is not None:
            cross_check(official, spec, (2, 3, 60, 76))
        run_case(a.out, spec, (2, 3, 60, 76), 15, 1234)


if __name__ == "__main__":
    main()
