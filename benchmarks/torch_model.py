#!/usr/bin/env python3
"""PyTorch peer of benchmarks/bench_model: the HRNet of tools/gen_model_reference.py (same
architecture and key names as ours) timed on the same input: a training step and an inference
forward. The step is the task's: pose (--head pose: the heatmap loss, Adam) or classification
(--head cls: cross-entropy, SGD with Nesterov momentum and weight decay) or segmentation (--head
seg: logits upsampled to the labels' size, cross-entropy with the Cityscapes class weights and
ignore label 255, SGD with momentum and weight decay), as bench_model's. CPU: eager fp32 with
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

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from gen_model_reference import HRNet, official  # noqa: E402


CITYSCAPES_WEIGHTS = [0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786,
                      1.0023, 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529,
                      1.0507]


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
    ap.add_argument("--head", default="pose", choices=["pose", "cls", "seg"])
    ap.add_argument("--classes", type=int, default=1000, help="cls/seg: the number of classes")
    ap.add_argument("--align-corners", action="store_true", help="seg: MODEL.ALIGN_CORNERS")
    ap.add_argument("--head-channels", default="32,64,128,256", help="cls: the head's widths")
    ap.add_argument("--head-features", type=int, default=2048, help="cls: the head's features")
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
        # the reference model returns a list of head outputs; pose and cls heads have one
        def __init__(self):
            super().__init__()
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

        def forward(self, x):
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
        if a.head == "seg":
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
        # warm-up: compiles and chooses algorithms; the eager training step's peak memory
        for _, key, mode, model, fn, _ in mine:
            t0 = time.perf_counter()
            getattr(model, mode)()
            if cuda and key == "train_eager_ms":
                torch.cuda.reset_peak_memory_stats()
            for _ in range(max(1, a.warmup)):
                fn()
            sync(cuda)
            if cuda and key == "train_eager_ms":
                print(f"RESULT train_peak_gb {torch.cuda.max_memory_allocated() / 1e9:.3f}", flush=True)
            log(f"{key[:-3]} warmed up in {time.perf_counter() - t0:.1f} s")
        handshake(group)
        for _, key, mode, model, fn, steps in mine:
            getattr(model, mode)()
            fn()  # after a mode switch: the first call may check guards or re-record a graph
            sync(cuda)
            print(f"RESULT {key} {timeit(fn, steps, cuda):.3f}", flush=True)
        mark(f"{group}.done")
    mark("all")
    log("all timed")


if __name__ == "__main__":
    main()
