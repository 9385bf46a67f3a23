#!/usr/bin/python3
"""PyTorch reference data for tests/test_ops_vs_torch.cpp.

Run:  /usr/bin/python3 tools/gen_op_reference.py --out tests/data/ops_reference.safetensors
Needs torch (1.13, CPU) and numpy; the safetensors file is written by hand here (8-byte LE
header length, JSON header, raw bytes), so the `safetensors` package is not needed.

Every case draws float32 inputs from its own seed, computes in float64 on those float32-rounded
values and stores everything as float32 (labels and counters as int64). Tensors are named
"<case>/<role>"; the file's __metadata__ holds one JSON object per case ({"op": ..., options})
so the C++ test takes shapes from the tensors and options from the metadata. Roles:
  inputs   x, w, b, gamma, beta, running_mean, running_var, a, b, pred, target, weight, ...
  output   y (and running_mean_out / running_var_out for batch-norm training)
  dy       random upstream gradient (absent for scalar losses: the seed is 1)
  grads    dx, dw, db, dgamma, dbeta, da, ... (d + input role)
Optimizer cases: p0, g1..g3 (gradients), p1..p3 (parameter after each step).
Schedule cases: lr [T] (learning rate at steps 0..T-1 for base lr in the metadata).
Module case: sd/<key> (state dict before), x, y, dy, dx, grad/<param>, sd_after/<key> (after one
training step's forward), y_eval (eval-mode output with the updated running statistics).
"""
import argparse
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors_out import write_safetensors  # noqa: E402

CASES = {}    # name -> metadata dict
TENSORS = {}  # "<case>/<role>" -> numpy array (float32 or int64)
_seed = [0]


def case(name, op, **opts):
    assert name not in CASES, name
    _seed[0] += 1
    torch.manual_seed(1000 + _seed[0])
    CASES[name] = dict(op=op, **opts)
    return name


def put(name, role, t):
    key = f"{name}/{role}"
    assert key not in TENSORS, key
    if isinstance(t, torch.Tensor):
        t = t.detach()
        t = t.numpy().copy() if t.dtype == torch.int64 else t.to(torch.float32).numpy()
    TENSORS[key] = np.array(t, order="C")  # keeps 0-d losses 0-d


def rnd(*shape, scale=1.0):
    """float32-rounded normal values as a float64 leaf."""
    return (torch.randn(*shape, dtype=torch.float32) * scale).double()


def run_grad(name, fn, inputs, scalar=False, constants=()):
    """inputs: role -> float64 tensor (or None). Stores inputs, y, dy and d<role> for every
    input not listed in `constants`."""
    leaves = {}
    for role, t in inputs.items():
        if t is None:
            continue
        put(name, role, t)
        leaves[role] = t.clone().requires_grad_(role not in constants)
    y = fn(**leaves)
    put(name, "y", y)
    if scalar:
        y.backward()
    else:
        dy = rnd(*y.shape)
        put(name, "dy", dy)
        y.backward(dy)
    for role, t in leaves.items():
        if role not in constants:
            put(name, "d" + role, t.grad)
    return y


# ---------------------------------------------------------------- ops
def conv_cases():
    configs = [  # name, C, H, W, K, (R, S), stride, padding
        ("conv3x3_s1_p1", 3, 7, 9, 4, (3, 3), (1, 1), (1, 1)),
        ("conv3x3_s2_p1", 3, 7, 9, 4, (3, 3), (2, 2), (1, 1)),  # 7x9 -> 4x5
        ("conv1x1_s1", 5, 6, 7, 3, (1, 1), (1, 1), (0, 0)),
        ("conv1x1_s2", 5, 7, 9, 3, (1, 1), (2, 2), (0, 0)),     # 7x9 -> 4x5
        ("conv5x5_p2", 3, 8, 7, 4, (5, 5), (1, 1), (2, 2)),
        ("conv1x3_p01", 3, 6, 7, 4, (1, 3), (1, 1), (0, 1)),
        ("conv3x1_p10_s21", 3, 7, 6, 2, (3, 1), (2, 1), (1, 0)),
    ]
    for base, C, H, W, K, (R, S), stride, pad in configs:
        for bias in (True, False):
            name = case(f"{base}_{'bias' if bias else 'nobias'}", "conv2d",
                        stride=list(stride), padding=list(pad), bias=bias)
            x, w = rnd(2, C, H, W), rnd(K, C, R, S, scale=0.5)
            b = rnd(K) if bias else None
            run_grad(name, lambda x, w, b=None: F.conv2d(x, w, b, stride, pad),
                     dict(x=x, w=w, b=b))


def batch_norm_cases():
    for name, shape, training in (("bn_train", (2, 5, 4, 3), True),
                                  ("bn_eval", (2, 5, 4, 3), False),
                                  ("bn_train_2d", (6, 5), True)):
        case(name, "batch_norm", training=training, momentum=0.1, eps=1e-5)
        C = shape[1]
        x = rnd(*shape) * 1.5 + 0.7
        x = x.float().double()
        gamma, beta = rnd(C, scale=0.5) + 1.0, rnd(C, scale=0.5)
        gamma = gamma.float().double()
        rm, rv = rnd(C, scale=0.3), (torch.rand(C) + 0.5).double()
        put(name, "running_mean", rm)
        put(name, "running_var", rv)
        rm_w, rv_w = rm.clone(), rv.clone()
        run_grad(name, lambda x, gamma, beta: F.batch_norm(
            x, rm_w, rv_w, gamma, beta, training=training, momentum=0.1, eps=1e-5),
            dict(x=x, gamma=gamma, beta=beta))
        put(name, "running_mean_out", rm_w)
        put(name, "running_var_out", rv_w)


def elementwise_cases():
    name = case("relu", "relu")
    run_grad(name, lambda x: F.relu(x), dict(x=rnd(2, 3, 5, 4)))
    name = case("add", "add")
    run_grad(name, lambda a, b: a + b, dict(a=rnd(2, 3, 4, 5), b=rnd(2, 3, 4, 5)))
    name = case("mul", "mul", alpha=-0.37)
    run_grad(name, lambda x: x * float(np.float32(-0.37)), dict(x=rnd(2, 3, 4, 5)))
    name = case("sum_all", "sum_all")
    run_grad(name, lambda x: x.sum(), dict(x=rnd(3, 4, 5)), scalar=True)
    name = case("reshape", "reshape", shape=[6, 20])
    run_grad(name, lambda x: x.reshape(6, 20), dict(x=rnd(2, 3, 4, 5)))


def resample_cases():
    # Nearest: to a size (x2, x4, non-integer, down) and by scale factor.
    for name, hw, opts in (
            ("nearest_size_x2", (5, 7), dict(size=[10, 14])),
            ("nearest_size_x4", (3, 4), dict(size=[12, 16])),
            ("nearest_size_5x7_to_12x9", (5, 7), dict(size=[12, 9])),
            ("nearest_size_9x11_to_4x5", (9, 11), dict(size=[4, 5])),
            ("nearest_scale_2", (5, 7), dict(scale=2.0)),
            ("nearest_scale_4", (3, 4), dict(scale=4.0)),
            ("nearest_scale_1.5", (5, 7), dict(scale=1.5)),  # 5x7 -> 7x10
            # By 1.5 the source index is the same whether the scale or the sizes set it;
            # by 1.7 it is not (5x7 -> 8x11: 1/1.7 versus 5/8 and 7/11).
            ("nearest_scale_1.7", (5, 7), dict(scale=1.7)),
    ):
        case(name, "upsample_nearest", **opts)
        if "size" in opts:
            fn = lambda x, s=tuple(opts["size"]): F.interpolate(x, size=s, mode="nearest")
        else:
            fn = lambda x, f=opts["scale"]: F.interpolate(x, scale_factor=f, mode="nearest")
        run_grad(name, fn, dict(x=rnd(2, 3, *hw)))
    # Bilinear, both align_corners settings, up and down, to a size and by scale factor.
    for ac in (False, True):
        tag = f"ac{int(ac)}"
        for name, hw, opts in (
                (f"bilinear_size_up_{tag}", (5, 7), dict(size=[12, 16])),
                (f"bilinear_size_odd_{tag}", (5, 7), dict(size=[12, 9])),
                (f"bilinear_size_down_{tag}", (9, 11), dict(size=[4, 5])),
                (f"bilinear_size_to1_{tag}", (5, 7), dict(size=[1, 3])),
                (f"bilinear_scale_2_{tag}", (5, 7), dict(scale=2.0)),
                (f"bilinear_scale_1.5_{tag}", (5, 7), dict(scale=1.5)),
                (f"bilinear_scale_0.5_{tag}", (9, 11), dict(scale=0.5)),  # -> 4x5
        ):
            case(name, "upsample_bilinear", align_corners=ac, **opts)
            if "size" in opts:
                fn = lambda x, s=tuple(opts["size"]), ac=ac: F.interpolate(
                    x, size=s, mode="bilinear", align_corners=ac)
            else:
                fn = lambda x, f=opts["scale"], ac=ac: F.interpolate(
                    x, scale_factor=f, mode="bilinear", align_corners=ac)
            run_grad(name, fn, dict(x=rnd(2, 3, *hw)))


def concat_cases():
    name = case("concat_dim1", "concat", dim=1, count=3)
    run_grad(name, lambda x0, x1, x2: torch.cat([x0, x1, x2], 1),
             dict(x0=rnd(2, 2, 4, 5), x1=rnd(2, 3, 4, 5), x2=rnd(2, 1, 4, 5)))
    name = case("concat_dim2", "concat", dim=2, count=3)
    run_grad(name, lambda x0, x1, x2: torch.cat([x0, x1, x2], 2),
             dict(x0=rnd(2, 3, 1, 5), x1=rnd(2, 3, 4, 5), x2=rnd(2, 3, 2, 5)))


def pool_cases():
    for name, hw, k, s, p, cip in (
            ("avgpool_k3s2p1_incl", (7, 9), 3, 2, 1, True),
            ("avgpool_k3s2p1_excl", (7, 9), 3, 2, 1, False),
            ("avgpool_k3s2p1_excl_even", (8, 6), 3, 2, 1, False),
            ("avgpool_k2s2", (7, 9), 2, 2, 0, True),
    ):
        case(name, "avg_pool2d", kernel=[k, k], stride=[s, s], padding=[p, p],
             count_include_pad=cip)
        run_grad(name, lambda x, k=k, s=s, p=p, cip=cip: F.avg_pool2d(
            x, k, s, p, ceil_mode=False, count_include_pad=cip), dict(x=rnd(2, 3, *hw)))
    name = case("global_avg_pool", "global_avg_pool")
    run_grad(name, lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1), dict(x=rnd(2, 5, 6, 7)))


def linear_cases():
    for bias in (True, False):
        name = case(f"linear_{'bias' if bias else 'nobias'}", "linear", bias=bias)
        run_grad(name, lambda x, w, b=None: F.linear(x, w, b),
                 dict(x=rnd(4, 6), w=rnd(3, 6, scale=0.5), b=rnd(3) if bias else None))


def joints_mse_loss(output, target, target_weight):
    # HRNet pose JointsMSELoss(use_target_weight=True): 0.5 * MSE per joint, averaged over joints.
    n, j = output.size(0), output.size(1)
    pred = output.reshape((n, j, -1)).split(1, 1)
    gt = target.reshape((n, j, -1)).split(1, 1)
    crit = torch.nn.MSELoss(reduction="mean")
    loss = 0
    for idx in range(j):
        p, g = pred[idx].squeeze(1), gt[idx].squeeze(1)
        w = target_weight[:, idx]
        loss = loss + 0.5 * crit(p.mul(w), g.mul(w))
    return loss / j


def loss_cases():
    name = case("heatmap_loss", "heatmap_loss")
    weight = (torch.rand(2, 4, 1) + 0.5).double()
    weight[0, 1, 0] = 0
    weight[1, 3, 0] = 0
    put(name, "weight", weight)
    run_grad(name, lambda pred, target: joints_mse_loss(pred, target, weight),
             dict(pred=rnd(2, 4, 6, 5, scale=0.3), target=torch.rand(2, 4, 6, 5).double()),
             scalar=True, constants=("target",))

    for name, shape in (("cross_entropy_4d", (2, 5, 4, 3)), ("cross_entropy_2d", (7, 4))):
        case(name, "cross_entropy", ignore_index=255)
        n, c = shape[0], shape[1]
        labels = torch.randint(0, c, (n,) + shape[2:], dtype=torch.int64)
        flat = labels.view(-1)
        flat[torch.randperm(flat.numel())[: max(1, flat.numel() // 5)]] = 255
        put(name, "labels", labels)
        run_grad(name, lambda logits: F.cross_entropy(logits, labels, ignore_index=255),
                 dict(logits=rnd(*shape, scale=2.0)), scalar=True)


# ---------------------------------------------------------------- nn modules
def module_cases():
    # Sequential(Conv2d(3,4,3,p=1,bias=False), BatchNorm2d(4), ReLU) in train mode, then eval.
    name = case("seq_conv_bn_relu", "module_conv_bn_relu", cin=3, cout=4, kernel=3, padding=1)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False),
                            torch.nn.BatchNorm2d(4), torch.nn.ReLU()).double()
    with torch.no_grad():
        m[0].weight.copy_(rnd(4, 3, 3, 3, scale=0.5))
        m[1].weight.copy_((rnd(4, scale=0.3) + 1).float().double())
        m[1].bias.copy_(rnd(4, scale=0.3))
        m[1].running_mean.copy_(rnd(4, scale=0.2))
        m[1].running_var.copy_((torch.rand(4) + 0.5).double())
    for k, v in m.state_dict().items():
        put(name, "sd/" + k, v)
    x = rnd(2, 3, 6, 5).requires_grad_(True)
    put(name, "x", x)
    m.train()
    y = m(x)
    put(name, "y", y)
    dy = rnd(*y.shape)
    put(name, "dy", dy)
    y.backward(dy)
    put(name, "dx", x.grad)
    for k, p in m.named_parameters():
        put(name, "grad/" + k, p.grad)
    for k, v in m.state_dict().items():
        put(name, "sd_after/" + k, v)
    m.eval()
    with torch.no_grad():
        put(name, "y_eval", m(x))


# ---------------------------------------------------------------- optimizers
def optimizer_cases():
    configs = [
        ("sgd_plain", dict(kind="sgd", lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0,
                           nesterov=False)),
        ("sgd_momentum", dict(kind="sgd", lr=0.1, momentum=0.9, dampening=0.0,
                              weight_decay=1e-4, nesterov=False)),
        ("sgd_nesterov", dict(kind="sgd", lr=0.1, momentum=0.9, dampening=0.0,
                              weight_decay=1e-4, nesterov=True)),
        ("adam", dict(kind="adam", lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                      weight_decay=0.0)),
        ("adam_l2", dict(kind="adam", lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                         weight_decay=0.1)),
        ("adamw", dict(kind="adamw", lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                       weight_decay=0.01)),
    ]
    for name, o in configs:
        case(name, "optimizer", steps=3, **o)
        p = rnd(4, 6).requires_grad_(True)
        put(name, "p0", p)
        if o["kind"] == "sgd":
            opt = torch.optim.SGD([p], lr=o["lr"], momentum=o["momentum"],
                                  dampening=o["dampening"], weight_decay=o["weight_decay"],
                                  nesterov=o["nesterov"])
        else:
            cls = torch.optim.Adam if o["kind"] == "adam" else torch.optim.AdamW
            opt = cls([p], lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                      weight_decay=o["weight_decay"])
        for k in range(1, 4):
            g = rnd(4, 6, scale=0.5)
            put(name, f"g{k}", g)
            p.grad = g.clone()
            opt.step()
            put(name, f"p{k}", p)


# ---------------------------------------------------------------- lr schedules
def schedule_cases():
    T, base = 30, 0.1

    def record(name, make, **meta):
        case(name, "schedule", base_lr=base, steps=T, **meta)
        p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.SGD([p], lr=base)
        sched = make(opt)
        lrs = []
        for _ in range(T):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        put(name, "lr", torch.tensor(lrs, dtype=torch.float64))

    S = torch.optim.lr_scheduler
    record("sched_multistep", lambda o: S.MultiStepLR(o, [10, 20], 0.1),
           kind="multistep", milestones=[10, 20], gamma=0.1)
    record("sched_poly", lambda o: S.LambdaLR(o, lambda t: (1 - t / T) ** 0.9),
           kind="poly", total=T, power=0.9)
    record("sched_cosine", lambda o: S.CosineAnnealingLR(o, T_max=T, eta_min=1e-5),
           kind="cosine", t_max=T, eta_min=1e-5)
    # engine/optim.h LinearWarmup multiplies the inner schedule (which runs on the same step
    # count) by the warm-up factor: torch's ChainedScheduler, not SequentialLR.
    record("sched_warmup_multistep", lambda o: S.ChainedScheduler([
        S.LinearLR(o, start_factor=1.0 / 3, total_iters=5),
        S.MultiStepLR(o, [10, 20], 0.1)]),
        kind="warmup_multistep", warmup=5, start_factor=1.0 / 3, milestones=[10, 20],
        gamma=0.1)


# ---------------------------------------------------------------- file
def group_norm_cases():
    # last: the cases before keep their seeds. Odd sizes; 2-D input; groups of one channel.
    for name, shape, groups in (("group_norm", (2, 6, 5, 3), 3),
                                ("group_norm_2d", (4, 8), 2),
                                ("group_norm_per_channel", (2, 4, 3, 3), 4)):
        case(name, "group_norm", groups=groups, eps=1e-5)
        C = shape[1]
        x = (rnd(*shape) * 1.5 + 0.7).float().double()
        gamma, beta = (rnd(C, scale=0.5) + 1.0).float().double(), rnd(C, scale=0.5)
        run_grad(name, lambda x, gamma, beta: F.group_norm(x, groups, gamma, beta, eps=1e-5),
                 dict(x=x, gamma=gamma, beta=beta))


def label_smoothing_cases():
    # after group norm: the cases before keep their seeds
    for name, shape, eps in (("cross_entropy_smooth_2d", (6, 5), 0.1),
                             ("cross_entropy_smooth_4d", (2, 4, 3, 3), 0.25)):
        case(name, "cross_entropy", ignore_index=255, label_smoothing=eps)
        n, c = shape[0], shape[1]
        labels = torch.randint(0, c, (n,) + shape[2:], dtype=torch.int64)
        labels.view(-1)[1] = 255
        put(name, "labels", labels)
        run_grad(name, lambda logits: F.cross_entropy(logits, labels, ignore_index=255,
                                                      label_smoothing=eps),
                 dict(logits=rnd(*shape, scale=2.0)), scalar=True)


# HRNet-Semantic-Segmentation's Cityscapes class weights (lib/datasets/cityscapes.py)
CITYSCAPES_WEIGHTS = [0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786,
                      1.0023, 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529,
                      1.0507]


def ohem_forward(score, target, ignore_label, thresh, min_kept, weight):
    """OhemCrossEntropy._ohem_forward of HRNet-Semantic-Segmentation lib/core/criterion.py,
    verbatim but for the resize (score and target have the same size here) and with
    self.min_kept = max(1, min_kept) as its constructor sets it."""
    min_kept = max(1, min_kept)
    criterion = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_label,
                                          reduction='none')
    pred = F.softmax(score, dim=1)
    pixel_losses = criterion(score, target).contiguous().view(-1)
    mask = target.contiguous().view(-1) != ignore_label

    tmp_target = target.clone()
    tmp_target[tmp_target == ignore_label] = 0
    pred = pred.gather(1, tmp_target.unsqueeze(1))
    pred, ind = pred.contiguous().view(-1,)[mask].contiguous().sort()
    min_value = pred[min(min_kept, pred.numel() - 1)]
    threshold = max(min_value, thresh)

    pixel_losses = pixel_losses[mask][ind]
    pixel_losses = pixel_losses[pred < threshold]
    return pixel_losses.mean(), pred, threshold


def seg_labels(shape, c, ignore_frac):
    """Labels [N, H, W] in [0, c) with round(ignore_frac * count) pixels set to 255."""
    labels = torch.randint(0, c, shape, dtype=torch.int64)
    flat = labels.view(-1)
    flat[torch.randperm(flat.numel())[: max(1, round(flat.numel() * ignore_frac))]] = 255
    return labels


def seg_loss_cases():
    # last: the cases before keep their seeds. The losses of HRNet-Semantic-Segmentation's
    # criterion.py: nn.CrossEntropyLoss(weight, ignore_index) and OhemCrossEntropy.
    cityscapes = torch.tensor(CITYSCAPES_WEIGHTS, dtype=torch.float32).double()
    for name, shape, eps, official in (("cross_entropy_weighted_cityscapes", (2, 19, 6, 5), 0.0, True),
                                       ("cross_entropy_weighted_smooth_4d", (2, 5, 3, 4), 0.2, False),
                                       ("cross_entropy_weighted_smooth_2d", (7, 6), 0.1, False)):
        case(name, "cross_entropy", ignore_index=255, label_smoothing=eps, weighted=True)
        n, c = shape[0], shape[1]
        labels = seg_labels((n,) + shape[2:], c, 0.1)
        w = cityscapes if official else (torch.rand(c) + 0.5).double()
        put(name, "labels", labels)
        put(name, "class_weight", w)
        run_grad(name, lambda logits: F.cross_entropy(logits, labels, weight=w, ignore_index=255,
                                                      label_smoothing=eps),
                 dict(logits=rnd(*shape, scale=2.0)), scalar=True)

    # OHEM on [2, 19, 4, 6] (48 pixels, ~43 counted): logits N(0, 2) with +6 on the label at
    # 60% of the pixels, so the label's probability covers (0, 1) and both thresholds select.
    # (name, thresh, min_kept, weighted, threshold expected from min_value rather than thresh)
    for name, thresh, min_kept, weighted, from_min in (
            ("ohem_t07_kept_small", 0.7, 10, True, False),
            ("ohem_t07_kept_min_value", 0.7, 30, True, True),
            ("ohem_t07_kept_large", 0.7, 100000, False, True),
            ("ohem_t09_kept_small", 0.9, 5, False, False),
            ("ohem_t09_kept_large", 0.9, 1000, True, True)):
        case(name, "ohem_cross_entropy", ignore_index=255, thresh=thresh, min_kept=min_kept,
             weighted=weighted)
        labels = seg_labels((2, 4, 6), 19, 0.1)
        logits = rnd(2, 19, 4, 6, scale=2.0)
        boost = (torch.rand(2, 4, 6) < 0.6).double() * 6.0
        logits.scatter_add_(1, (labels % 255).unsqueeze(1), boost.unsqueeze(1))
        logits = logits.float().double()
        w = cityscapes if weighted else None
        put(name, "labels", labels)
        if weighted:
            put(name, "class_weight", w)
        y, pred, threshold = ohem_forward(logits, labels, 255, thresh, min_kept, w)
        # the case exercises the branch it names, and no probability is within 1e-5 of the
        # threshold but the one that defines it (float32 probabilities select the same pixels)
        thr = float(threshold)
        assert (thr > thresh) == from_min, (name, thr)
        near = ((pred - thr).abs() < 1e-5).sum().item()
        assert near == (1 if from_min else 0), (name, near)
        kept = (pred < threshold).sum().item()
        assert 0 < kept < pred.numel(), (name, kept)
        run_grad(name, lambda logits: ohem_forward(logits, labels, 255, thresh, min_kept, w)[0],
                 dict(logits=logits), scalar=True)



# ---------------------------------------------------------------- detection (HRNet-FCOS)
FLT_MIN = float(np.finfo(np.float32).tiny)


def sigmoid_focal_loss_cpu(logits, targets, gamma, alpha):
    """maskrcnn_benchmark/layers/sigmoid_focal_loss.py of HRNet-FCOS, verbatim: logits [M, C],
    targets [M] (0 background, k in 1..C class k - 1, negative ignored) -> the terms [M, C]."""
    num_classes = logits.shape[1]
    gamma = gamma
    alpha = alpha
    dtype = targets.dtype
    device = targets.device
    class_range = torch.arange(1, num_classes+1, dtype=dtype, device=device).unsqueeze(0)

    t = targets.unsqueeze(1)
    p = torch.sigmoid(logits)
    term1 = (1 - p) ** gamma * torch.log(p)
    term2 = p ** gamma * torch.log(1 - p)
    return -(t == class_range).float() * term1 * alpha - ((t != class_range) * (t >= 0)).float() * term2 * (1 - alpha)


def focal_loss_stable(x, targets, gamma, alpha):
    """The forms of their CUDA kernels (csrc/cuda/SigmoidFocalLoss_cuda.cu), which the engine
    computes: log(max(p, FLT_MIN)) and the stable log(1 - p) = -max(x, 0) - log1p(exp(-|x|)).
    -> (terms, d terms / dx), [M, C] each."""
    C = x.shape[1]
    cls = torch.arange(1, C + 1, dtype=targets.dtype).unsqueeze(0)
    t = targets.unsqueeze(1)
    pos = (t == cls).double()
    neg = ((t != cls) & (t >= 0)).double()
    p = torch.sigmoid(x)
    log_p = torch.log(p.clamp(min=FLT_MIN))
    log_1mp = -x.clamp(min=0) - torch.log1p(torch.exp(-x.abs()))
    loss = -pos * alpha * (1 - p) ** gamma * log_p - neg * (1 - alpha) * p ** gamma * log_1mp
    grad = (-pos * alpha * (1 - p) ** gamma * (1 - p - p * gamma * log_p)
            - neg * (1 - alpha) * p ** gamma * (log_1mp * (1 - p) * gamma - p))
    return loss, grad


def fcos_cls_loss(logits, labels, gamma, alpha):
    """FCOS's classification loss on logits [N, C, P], labels [N, P] (loss.py: the focal loss
    summed, / (num_pos + N)), the terms by the official CPU formula."""
    n, c = logits.shape[0], logits.shape[1]
    flat = logits.permute(0, 2, 1).reshape(-1, c)
    num_pos = int((labels > 0).sum())
    return sigmoid_focal_loss_cpu(flat, labels.reshape(-1), gamma, alpha).sum() / (num_pos + n)


def iou_loss_official(pred, target, weight=None):
    """IOULoss.forward of maskrcnn_benchmark/layers/iou_loss.py, verbatim: pred, target [M, 4]."""
    pred_left = pred[:, 0]
    pred_top = pred[:, 1]
    pred_right = pred[:, 2]
    pred_bottom = pred[:, 3]

    target_left = target[:, 0]
    target_top = target[:, 1]
    target_right = target[:, 2]
    target_bottom = target[:, 3]

    target_aera = (target_left + target_right) * \
                  (target_top + target_bottom)
    pred_aera = (pred_left + pred_right) * \
                (pred_top + pred_bottom)

    w_intersect = torch.min(pred_left, target_left) + \
                  torch.min(pred_right, target_right)
    h_intersect = torch.min(pred_bottom, target_bottom) + \
                  torch.min(pred_top, target_top)

    area_intersect = w_intersect * h_intersect
    area_union = target_aera + pred_aera - area_intersect

    losses = -torch.log((area_intersect + 1.0) / (area_union + 1.0))

    if weight is not None and weight.sum() > 0:
        return (losses * weight).sum() / weight.sum()
    else:
        assert losses.numel() != 0
        return losses.mean()


def fcos_iou_loss(pred, target, weight):
    """pred, target [N, 4, P], weight [N, P]: IOULoss on the locations with weight > 0 (FCOS
    indexes the positive locations before the loss); 0 when there are none."""
    sel = weight.reshape(-1) > 0
    if int(sel.sum()) == 0:
        return (pred * 0).sum()
    pf = pred.permute(0, 2, 1).reshape(-1, 4)[sel]
    tf = target.permute(0, 2, 1).reshape(-1, 4)[sel]
    return iou_loss_official(pf, tf, weight.reshape(-1)[sel])


def masked_bce(logits, target, mask, official):
    """logits, target, mask [N, P]: BCE with logits over the elements with mask > 0 (FCOS:
    nn.BCEWithLogitsLoss() on the positive locations when `official`, the 0/1 mask), else
    weighted by the mask: sum m * bce / sum m; 0 when no mask is > 0."""
    sel = mask.reshape(-1) > 0
    if int(sel.sum()) == 0:
        return (logits * 0).sum()
    x, t, m = logits.reshape(-1)[sel], target.reshape(-1)[sel], mask.reshape(-1)[sel]
    if official:
        return torch.nn.BCEWithLogitsLoss()(x, t)
    return F.binary_cross_entropy_with_logits(x, t, weight=m, reduction="sum") / m.sum()


def f32(t):
    return t.float().double()


def det_cases():
    # last: the cases before keep their seeds. The ops of the FCOS head and its loss.
    name = case("exp", "exp")
    run_grad(name, lambda x: torch.exp(x), dict(x=rnd(2, 3, 4, 5)))
    name = case("scale", "scale")
    run_grad(name, lambda x, s: s * x, dict(x=rnd(2, 3, 5, 4), s=f32(torch.tensor([1.37]))))

    # (name, N, C, P, gamma, alpha, logit scale, all background)
    for name, n, c, p, gamma, alpha, scale, background in (
            ("focal_fcos", 3, 5, 37, 2.0, 0.25, 2.0, False),
            ("focal_gamma15_wide", 2, 3, 23, 1.5, 0.4, 5.0, False),
            ("focal_all_background", 2, 4, 11, 2.0, 0.25, 2.0, True)):
        case(name, "sigmoid_focal_loss", gamma=gamma, alpha=alpha)
        logits = rnd(n, c, p, scale=scale)
        labels = torch.randint(0, c + 1, (n, p), dtype=torch.int64)
        if background:
            labels.zero_()
        else:
            labels[1] = 0  # one image with no object
        flat = labels.view(-1)
        flat[torch.randperm(flat.numel())[: flat.numel() // 5]] = -1  # ignored
        assert (labels > 0).any() != background and (labels < 0).any()
        # the official CPU formula against the CUDA kernel's stable forms, values and gradients
        x = logits.permute(0, 2, 1).reshape(-1, c).clone().requires_grad_(True)
        official = sigmoid_focal_loss_cpu(x, labels.reshape(-1), gamma, alpha)
        stable, stable_grad = focal_loss_stable(x.detach(), labels.reshape(-1), gamma, alpha)
        (official_grad,) = torch.autograd.grad(official.sum(), x)
        assert torch.allclose(official, stable, rtol=1e-9, atol=1e-12), name
        assert torch.allclose(official_grad, stable_grad, rtol=1e-9, atol=1e-12), name
        put(name, "labels", labels)
        run_grad(name, lambda logits: fcos_cls_loss(logits, labels, gamma, alpha),
                 dict(logits=logits), scalar=True)

    # IoU loss: targets the distances of a location to its box, predictions near them (both
    # sides of every min, one tie), weights the centerness targets; locations with weight 0 (or
    # below) hold garbage that would make the loss NaN or infinite if read
    for name, n, p, all_zero in (("iou_weighted", 2, 29, False), ("iou_no_positive", 1, 7, True)):
        case(name, "iou_loss")
        target = f32(torch.rand(n, 4, p).double() * 8 + 0.5)
        pred = f32(target * torch.exp(torch.randn(n, 4, p).double() * 0.3))
        weight = f32(torch.rand(n, p).double() * 0.9 + 0.1)
        off = torch.rand(n, p) < 0.3
        off[0, 0] = True
        weight[off] = 0
        if all_zero:
            weight.zero_()
        else:
            weight[0, 1] = -0.5  # not > 0: left out as well
            off[0, 1] = True
            pred[0, 0, 2] = target[0, 0, 2]  # a tie: torch.min splits the gradient
            assert weight[0, 2] > 0
        garbage = torch.tensor([-3.0, 1e20, -1e20, 0.0], dtype=torch.float64)
        for k, (i, j) in enumerate(off.nonzero().tolist()):
            pred[i, :, j] = garbage.roll(k)
            target[i, :, j] = garbage.roll(k + 1)
        pred, target = f32(pred), f32(target)
        run_grad(name, fcos_iou_loss, dict(pred=pred, target=target, weight=weight),
                 scalar=True, constants=("target", "weight"))

    # centerness: BCE with logits over the positive locations (0/1 mask, official
    # nn.BCEWithLogitsLoss), over fractional mask weights, and with no positive location
    for name, n, p, kind in (("bce_centerness", 2, 31, "official"), ("bce_weighted", 3, 17, "weighted"),
                             ("bce_no_mask", 2, 5, "none")):
        case(name, "masked_bce_with_logits")
        logits = rnd(n, p, scale=2.0)
        target = f32(torch.rand(n, p).double())
        if kind == "official":
            mask = (torch.rand(n, p) < 0.4).double()
            mask[0, 0] = 1
        elif kind == "weighted":
            mask = f32(torch.rand(n, p).double() * 2 - 0.5)  # some <= 0: left out
        else:
            mask = torch.zeros(n, p, dtype=torch.float64)
        off = mask <= 0
        logits[off] = 1e30
        target[off] = -1e30
        logits = f32(logits)
        run_grad(name, lambda logits, target, mask: masked_bce(logits, target, mask,
                                                               kind == "official"),
                 dict(logits=logits, target=target, mask=mask), scalar=True,
                 constants=("target", "mask"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/ops_reference.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for gen in (conv_cases, batch_norm_cases, elementwise_cases, resample_cases, concat_cases,
                pool_cases, linear_cases, loss_cases, module_cases, optimizer_cases,
                schedule_cases, group_norm_cases, label_smoothing_cases, seg_loss_cases,
                det_cases):
        gen()
    for k, a in TENSORS.items():
        assert a.dtype == np.int64 or np.all(np.isfinite(a)), k
    meta = {k: json.dumps(v, sort_keys=True) for k, v in CASES.items()}
    meta["_generator"] = f"tools/gen_op_reference.py, torch {torch.__version__}"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_safetensors(args.out, TENSORS, meta)
    print(f"{args.out}: {len(CASES)} cases, {len(TENSORS)} tensors, "
          f"{os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
