#!/usr/bin/python3
"""PyTorch reference data for tests/test_models.cpp: HRNet forward, loss and gradients.

Run:  /usr/bin/python3 tools/gen_model_reference.py --out tests/data
      /usr/bin/python3 tools/gen_model_reference.py --w32-dir DIR   (big, not committed)
      /usr/bin/python3 tools/gen_model_reference.py --count         (param / mult-add table)
Needs torch (1.13, CPU) and numpy. safetensors files are written by hand (8-byte LE header
length, JSON header, raw bytes) so that tensors keep the order they are written in.

The network here is written from the facts in docs/MODELS.md (HRNet papers, official key
names), independently of the C++ code. Small configs (stem 16 ch, widths [4,8,16,32], one
block per branch) keep the committed files small but run every code path of the real
architecture: Bottleneck stem layer with downsample, transitions creating a branch, several
modules per stage, fuse layers in all three directions, the pose head's single-output last
module, the seg head (bilinear fuse, align_corners False, odd feature sizes) and the cls head
(the det head's reference, HRNet-FCOS, is tools/gen_fcos_reference.py, on this backbone).

Each model_<case>.safetensors holds (all f32 unless said):
  state.<key>        the state dict the C++ model loads (num_batches_tracked i64)
  input              [N,3,H,W]
  out_eval.<i>       head outputs in eval mode (running statistics)
  out_train.<i>      head outputs in training mode (batch statistics)
  target.* / labels  the loss inputs (labels i64)
  loss               scalar loss of the training-mode outputs
  grad.<param>       d loss / d parameter for every parameter
  after.<buffer>     BN running statistics and counters after the training forward
Computation is float64 on float32-rounded values; results are stored as float32.
__metadata__: "spec" (JSON of the config), "keys" (state-dict keys in PyTorch order, one per
line), "params" (parameter count).
Alongside: model_seg.pth, the seg state dict written by torch.save with the "model." prefix the
seg repository's checkpoints carry, to load through the .pth reader.
"""
import argparse
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

EPS, MOM = 1e-5, 0.1


# ----------------------------------------------------------------------------- network
def bn(c):
    return nn.BatchNorm2d(c, eps=EPS, momentum=MOM)


def conv(cin, cout, k, s=1, bias=False):
    return nn.Conv2d(cin, cout, k, s, k // 2, bias=bias)


def conv_bn(cin, cout, k, s, relu):
    layers = [conv(cin, cout, k, s), bn(cout)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes):
        super().__init__()
        self.conv1, self.bn1 = conv(cin, planes, 3), bn(planes)
        self.conv2, self.bn2 = conv(planes, planes, 3), bn(planes)
        self.downsample = conv_bn(cin, planes, 1, 1, False) if cin != planes else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Bottle(nn.Module):
    expansion = 4

    def __init__(self, cin, planes):
        super().__init__()
        self.conv1, self.bn1 = conv(cin, planes, 1), bn(planes)
        self.conv2, self.bn2 = conv(planes, planes, 3), bn(planes)
        self.conv3, self.bn3 = conv(planes, 4 * planes, 1), bn(4 * planes)
        self.downsample = conv_bn(cin, 4 * planes, 1, 1, False) if cin != 4 * planes else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


BLOCKS = {"BASIC": Basic, "BOTTLENECK": Bottle}


def make_layer(block, cin, planes, n):
    layers = []
    for _ in range(n):
        layers.append(block(cin, planes))
        cin = planes * block.expansion
    return nn.Sequential(*layers), cin


class HRModule(nn.Module):
    def __init__(self, cins, block, nblocks, planes, all_outputs, fuse, align_corners):
        super().__init__()
        nb = len(cins)
        self.fuse, self.align_corners = fuse, align_corners
        self.branches = nn.ModuleList()
        outs = []
        for i in range(nb):
            seq, c = make_layer(block, cins[i], planes[i], nblocks[i])
            self.branches.append(seq)
            outs.append(c)
        self.out_channels = outs
        self.fuse_layers = None
        if nb > 1:
            self.fuse_layers = nn.ModuleList()
            for i in range(nb if all_outputs else 1):
                row = nn.ModuleList()
                for j in range(nb):
                    if j > i:
                        row.append(conv_bn(outs[j], outs[i], 1, 1, False))
                    elif j == i:
                        row.append(None)
                    else:
                        chain = [conv_bn(outs[j], outs[j], 3, 2, True) for _ in range(i - j - 1)]
                        chain.append(conv_bn(outs[j], outs[i], 3, 2, False))
                        row.append(nn.Sequential(*chain))
                self.fuse_layers.append(row)

    def forward(self, xs):
        xs = [b(x) for b, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            acc = None
            for j, x in enumerate(xs):
                if j == i:
                    t = x
                elif j > i:
                    t = row[j](x)
                    if self.fuse == "nearest":
                        t = F.interpolate(t, scale_factor=2 ** (j - i), mode="nearest")
                    else:
                        t = F.interpolate(t, size=xs[i].shape[2:], mode="bilinear",
                                          align_corners=self.align_corners)
                else:
                    t = row[j](x)
                acc = t if acc is None else acc + t
            out.append(F.relu(acc))
        return out


class HRNet(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        head = spec["head"]
        stem = spec.get("stem", 64)
        fuse = "bilinear" if head == "seg" else "nearest"
        ac = spec.get("align_corners", False)
        self.conv1, self.bn1 = conv(3, stem, 3, 2), bn(stem)
        self.conv2, self.bn2 = conv(stem, stem, 3, 2), bn(stem)
        s1 = spec["stage1"]
        self.layer1, c = make_layer(BLOCKS[s1["block"]], stem, s1["planes"], s1["blocks"])
        pre = [c]
        self.n_branches = []
        for s, st in enumerate(spec["stages"]):
            block = BLOCKS[st["block"]]
            cur = [p * block.expansion for p in st["channels"]]
            trans = nn.ModuleList()
            for i in range(len(cur)):
                if i < len(pre):
                    trans.append(conv_bn(pre[i], cur[i], 3, 1, True) if pre[i] != cur[i] else None)
                else:
                    chain = [conv_bn(pre[-1], cur[i] if k == i - len(pre) else pre[-1], 3, 2, True)
                             for k in range(i + 1 - len(pre))]
                    trans.append(nn.Sequential(*chain))
            setattr(self, f"transition{s + 1}", trans)
            mods = []
            cins = cur
            for m in range(st["modules"]):
                last = s == len(spec["stages"]) - 1 and m == st["modules"] - 1
                mod = HRModule(cins, block, st["blocks"], st["channels"],
                               not (last and head == "pose"), fuse, ac)
                mods.append(mod)
                cins = mod.out_channels
            setattr(self, f"stage{s + 2}", nn.Sequential(*mods))
            self.n_branches.append(len(cur))
            pre = cins
        self.ac = ac
        if head == "pose":
            k = spec.get("final_conv_kernel", 1)
            self.final_layer = nn.Conv2d(pre[0], spec["num_joints"], k, 1, 1 if k == 3 else 0)
        elif head == "seg":
            c = sum(pre)
            k = spec.get("final_conv_kernel", 1)
            self.last_layer = nn.Sequential(nn.Conv2d(c, c, 1), bn(c), nn.ReLU(),
                                            nn.Conv2d(c, spec["num_classes"], k, 1,
                                                      1 if k == 3 else 0))
        # det: the backbone only (tools/gen_fcos_reference.py adds the official HRFPN and FCOS)
        elif head == "cls":
            hc = spec["cls_head_channels"]
            self.incre_modules = nn.ModuleList()
            for i, c in enumerate(pre):
                seq, _ = make_layer(Bottle, c, hc[i], 1)
                self.incre_modules.append(seq)
            self.downsamp_modules = nn.ModuleList()
            for i in range(len(pre) - 1):
                cin, cout = 4 * hc[i], 4 * hc[i + 1]
                self.downsamp_modules.append(
                    nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), bn(cout), nn.ReLU()))
            f = spec["cls_features"]
            self.final_layer = nn.Sequential(nn.Conv2d(4 * hc[len(pre) - 1], f, 1), bn(f),
                                             nn.ReLU())
            self.classifier = nn.Linear(f, spec["num_classes"])

    def backbone(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for s in range(len(self.spec["stages"])):
            trans = getattr(self, f"transition{s + 1}")
            xs = []
            for i in range(self.n_branches[s]):
                src = ys[i] if i < len(ys) else ys[-1]
                xs.append(trans[i](src) if trans[i] is not None else src)
            ys = getattr(self, f"stage{s + 2}")(xs)
        return ys

    def forward(self, x):
        ys = self.backbone(x)
        head = self.spec["head"]
        if head == "pose":
            return [self.final_layer(ys[0])]
        if head == "det":
            return ys
        if head == "seg":
            size = ys[0].shape[2:]
            cat = torch.cat([ys[0]] + [F.interpolate(y, size=size, mode="bilinear",
                                                     align_corners=self.ac) for y in ys[1:]], 1)
            return [self.last_layer(cat)]
        y = self.incre_modules[0](ys[0])
        for i, d in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](ys[i + 1]) + d(y)
        y = self.final_layer(y)
        y = y.mean(dim=(2, 3))
        return [self.classifier(y)]


# ----------------------------------------------------------------------------- helpers
def write_safetensors(path, tensors, metadata):
    header, blobs, off = {}, [], 0
    for name, a in tensors:
        a = np.array(a, order="C")  # keeps 0-d arrays 0-d
        dt = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}[a.dtype]
        b = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def f32(t):
    t = t.detach()
    return t.numpy().copy() if t.dtype == torch.int64 else t.to(torch.float32).numpy()


def randomise(model, gen, calib):
    """Non-trivial float32-representable parameters: He-scaled conv weights, random biases,
    BN affine near (1, 0); running statistics calibrated on a random batch then perturbed."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64)
                        * (1.6 / fan_in) ** 0.5)
            elif name.endswith("bias"):
                p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) - 0.5) * 0.4)
            else:
                p.copy_(0.6 + 0.8 * torch.rand(p.shape, generator=gen, dtype=torch.float64))
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in bns:
            m.momentum = 1.0
        model.train()
        model(calib)
        for m in bns:
            m.momentum = MOM
            m.running_mean.add_(torch.randn(m.running_mean.shape, generator=gen,
                                            dtype=torch.float64) * 0.1 * m.running_var.sqrt())
            m.running_var.mul_(0.7 + 0.6 * torch.rand(m.running_var.shape, generator=gen,
                                                      dtype=torch.float64))
            m.num_batches_tracked.fill_(int(torch.randint(1, 9, (1,), generator=gen)))
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.float().double())


def run_case(name, spec, shape, out_dir, seed, pth_prefix=None, train=True):
    """pth_prefix: also torch.save the state dict as model_<name>.pth with this key prefix."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = HRNet(spec).double()
    x = torch.randn(shape, generator=gen, dtype=torch.float64).float().double()
    randomise(model, gen, torch.randn(shape, generator=gen, dtype=torch.float64))
    sd = {k: v.clone() for k, v in model.state_dict().items()}  # before training moves BN stats
    tensors = [("state." + k, f32(v)) for k, v in sd.items()]
    tensors.append(("input", f32(x)))

    model.eval()
    with torch.no_grad():
        for i, y in enumerate(model(x)):
            tensors.append((f"out_eval.{i}", f32(y)))

    if not train:
        finish(name, spec, model, sd, tensors, out_dir, pth_prefix, None)
        return
    model.train()
    outs = model(x)
    head = spec["head"]
    if head == "pose":
        y = outs[0]
        target = torch.rand(y.shape, generator=gen, dtype=torch.float64).float().double()
        weight = (torch.rand(y.shape[:2] + (1,), generator=gen) > 0.2).double()
        loss = 0
        for j in range(y.shape[1]):  # JointsMSELoss with target weights
            w = weight[:, j]
            loss = loss + 0.5 * F.mse_loss(y[:, j].flatten(1) * w, target[:, j].flatten(1) * w)
        loss = loss / y.shape[1]
        tensors += [("target", f32(target)), ("target_weight", f32(weight))]
    elif head == "seg":
        labels = torch.randint(0, spec["num_classes"], (shape[0], shape[2], shape[3]),
                               generator=gen)
        labels[torch.rand(labels.shape, generator=gen) < 0.1] = 255
        up = F.interpolate(outs[0], size=shape[2:], mode="bilinear",
                           align_corners=spec.get("align_corners", False))
        loss = F.cross_entropy(up, labels, ignore_index=255)
        tensors.append(("labels", labels.numpy().astype(np.int64)))
    elif head == "cls":
        labels = torch.randint(0, spec["num_classes"], (shape[0],), generator=gen)
        loss = F.cross_entropy(outs[0], labels)
        tensors.append(("labels", labels.numpy().astype(np.int64)))
    else:
        raise ValueError(f"no training loss for the {head} head here")
    loss.backward()
    for i, y in enumerate(outs):
        tensors.append((f"out_train.{i}", f32(y)))
    tensors.append(("loss", f32(loss.reshape(()))))
    for k, p in model.named_parameters():
        tensors.append(("grad." + k, f32(p.grad)))
    for k, b in model.named_buffers():
        tensors.append(("after." + k, f32(b)))

    finish(name, spec, model, sd, tensors, out_dir, pth_prefix, loss)


def finish(name, spec, model, sd, tensors, out_dir, pth_prefix, loss):
    nparams = sum(p.numel() for p in model.parameters())
    meta = {"spec": json.dumps(spec), "keys": "\n".join(sd.keys()), "params": str(nparams)}
    path = os.path.join(out_dir, f"model_{name}.safetensors")
    write_safetensors(path, tensors, meta)
    print(f"{path}: {len(tensors)} tensors, {nparams} params",
          "" if loss is None else f"loss {float(loss):.6f}")
    if pth_prefix is None:
        return
    fsd = {pth_prefix + k: (v.float() if v.is_floating_point() else v.clone())
           for k, v in sd.items()}
    torch.save(fsd, os.path.join(out_dir, f"model_{name}.pth"))


def small(head, tiny=False, **kw):
    """tiny: one module per stage, widths [2,4,6,8], stem 8 (the non-pose heads); otherwise
    widths [4,8,12,16], stage3 with two modules, stem 16."""
    w = [2, 4, 6, 8] if tiny else [4, 8, 12, 16]
    s = {"head": head, "stem": 8 if tiny else 16,
         "stage1": {"block": "BOTTLENECK", "planes": 4 if tiny else 8, "blocks": 1},
         "stages": [{"modules": 1, "block": "BASIC", "blocks": [1] * 2, "channels": w[:2]},
                    {"modules": 1 if tiny else 2, "block": "BASIC", "blocks": [1] * 3,
                     "channels": w[:3]},
                    {"modules": 1, "block": "BASIC", "blocks": [1] * 4, "channels": w}]}
    s.update(kw)
    return s


def official(head, width, **kw):
    s = {"head": head, "stem": 64, "stage1": {"block": "BOTTLENECK", "planes": 64, "blocks": 4},
         "stages": [{"modules": 1, "block": "BASIC", "blocks": [4] * 2,
                     "channels": [width, 2 * width]},
                    {"modules": 4, "block": "BASIC", "blocks": [4] * 3,
                     "channels": [width, 2 * width, 4 * width]},
                    {"modules": 3, "block": "BASIC", "blocks": [4] * 4,
                     "channels": [width, 2 * width, 4 * width, 8 * width]}]}
    s.update(kw)
    return s


def count_table():
    """Parameter counts and conv+linear multiply-adds, as a cross-check of the C++ summary."""
    def macs(model, shape):
        total = [0]

        def hook(m, i, o):
            if isinstance(m, nn.Conv2d):
                total[0] += o.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            elif isinstance(m, nn.Linear):
                total[0] += o.numel() * m.in_features
        hs = [m.register_forward_hook(hook) for m in model.modules()]
        with torch.no_grad():
            model.eval()(torch.zeros(shape))
        for h in hs:
            h.remove()
        return total[0]

    for name, spec, shape in [
            ("pose w32 256x192", official("pose", 32, num_joints=17), (1, 3, 256, 192)),
            ("pose w48 384x288", official("pose", 48, num_joints=17), (1, 3, 384, 288)),
            ("cls w18", official("cls", 18, cls_head_channels=[32, 64, 128, 256],
                                 cls_features=2048, num_classes=1000), (1, 3, 224, 224)),
            ("seg w48", official("seg", 48, num_classes=19, align_corners=False),
             (1, 3, 256, 512))]:
        m = HRNet(spec)
        n = sum(p.numel() for p in m.parameters())
        print(f"{name}: {n} params, {len(m.state_dict())} state entries, "
              f"{macs(m, shape)} mult-adds at {shape}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="directory for the small committed reference files")
    ap.add_argument("--w32-dir", help="write the W32 pose reference (big) here")
    ap.add_argument("--count", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.count:
        count_table()
    if a.out:
        run_case("pose", small("pose", num_joints=17, final_conv_kernel=1), (2, 3, 128, 64),
                 a.out, 11)
        run_case("seg", small("seg", tiny=True, num_classes=5, final_conv_kernel=1,
                              align_corners=False), (2, 3, 60, 76), a.out, 12, pth_prefix="model.")
        run_case("cls", small("cls", tiny=True, cls_head_channels=[2, 2, 4, 4], cls_features=16,
                              num_classes=10), (2, 3, 32, 64), a.out, 13)
    if a.w32_dir:
        os.makedirs(a.w32_dir, exist_ok=True)
        run_case("pose_w32", official("pose", 32, num_joints=17), (1, 3, 256, 192), a.w32_dir, 21,
                 pth_prefix="", train=False)

if __name__ == "__main__":
    main()
