"""The Python package against the C++ programs and PyTorch (issue 16): forward values equal the
official PyTorch model's and hrnet-infer's, DLPack round trips with numpy and PyTorch, errors as
hrnet.Error with the engine's one-line message, each head's image prediction equal to
hrnet-infer --image on a synthetic image, and hrnet.train interrupted by Ctrl-C then resumed.

Run by ctest (label python) with PYTHONPATH=<build>/python and HRNET_INFER_EXE, HRNET_SYNTH_EXE
set; by hand:
    PYTHONPATH=build/python HRNET_INFER_EXE=build/apps/hrnet-infer \
    HRNET_SYNTH_EXE=build/apps/hrnet-synth build/venv/bin/python -m pytest tests/python -q
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import hrnet

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
from gen_model_reference import HRNet as TorchHRNet, official, randomise  # noqa: E402
from safetensors_out import read_safetensors, write_safetensors  # noqa: E402

INFER = os.environ.get("HRNET_INFER_EXE", "")
SYNTH = os.environ.get("HRNET_SYNTH_EXE", "")


def program(args, **kw):
    """A C++ program with this process's CPU thread count (the kernels' summation order follows
    it, so equal counts give equal bits)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(hrnet.get_num_threads()))
    return subprocess.run(args, check=True, capture_output=True, env=env, **kw)


def need(exe):
    if not exe or not os.access(exe, os.X_OK):
        pytest.fail(f"the C++ program is not given (HRNET_INFER_EXE / HRNET_SYNTH_EXE): {exe!r}")


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture(scope="module")
def pose_w18(tmp_path_factory):
    """The official pose W18 in PyTorch with non-trivial weights and BN statistics, its weights
    as safetensors (official keys) and the same model in our engine."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    ref = TorchHRNet(official("pose", 18, num_joints=17)).double()
    randomise(ref, gen, torch.randn(2, 3, 64, 64, generator=gen, dtype=torch.float64))
    ref = ref.float().eval()
    path = str(tmp_path_factory.mktemp("w18") / "pose_w18.safetensors")
    write_safetensors(path, {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}, {})
    return ref, path, hrnet.Model("pose_w18", weights=path)


def test_forward_equals_pytorch(pose_w18):
    ref, path, model = pose_w18
    x = np.random.default_rng(0).standard_normal((2, 3, 128, 96), dtype=np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x))
    want = (want[0] if isinstance(want, (list, tuple)) else want).numpy()
    got = model(x)
    assert isinstance(got, np.ndarray) and got.shape == (2, 17, 32, 24) and got.dtype == np.float32
    assert rel_err(got, want) < 1e-4
    eager = hrnet.Model("pose_w18", weights=path, graph=False)(x)
    assert rel_err(eager, want) < 1e-4
    # the same weights as a PyTorch .pth file
    pth = path.replace(".safetensors", ".pth")
    torch.save(ref.state_dict(), pth)
    np.testing.assert_array_equal(hrnet.Model("pose_w18", weights=pth)(x), got)


def test_official_config_and_pth_checkpoint(tmp_path):
    """The authors' W32 experiment file with a PyTorch .pth checkpoint (torch.save of the
    official model's state dict, as the official repository's files are)."""
    gen = torch.Generator().manual_seed(5)
    ref = TorchHRNet(official("pose", 32, num_joints=17)).double()
    randomise(ref, gen, torch.randn(2, 3, 64, 64, generator=gen, dtype=torch.float64))
    ref = ref.float().eval()
    pth = str(tmp_path / "pose_hrnet_w32_256x192.pth")
    torch.save(ref.state_dict(), pth)
    cfg = os.path.join(HERE, "..", "data", "model_configs", "w32_256x192_adam_lr1e-3.yaml")
    model = hrnet.Model(cfg, weights=pth)
    assert model.head == "pose" and model.input_size == (256, 192)
    assert model.num_parameters == sum(p.numel() for p in ref.parameters()) == 28536113
    x = torch.randn(1, 3, 64, 64, generator=gen)
    with torch.no_grad():
        want = ref(x)
    want = want[0] if isinstance(want, (list, tuple)) else want
    assert rel_err(model(x).numpy(), want.numpy()) < 1e-4


def test_forward_equals_cpp_program(pose_w18, tmp_path):
    need(INFER)
    _, path, model = pose_w18
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64), dtype=np.float32)
    write_safetensors(str(tmp_path / "in.safetensors"), {"input": x}, {})
    program([INFER, "--model", "pose_w18", "--weights", path, "--input-tensor",
             str(tmp_path / "in.safetensors"), "--output-tensor", str(tmp_path / "out.safetensors")])
    want = read_safetensors(str(tmp_path / "out.safetensors"))["output"]
    got = model(x)
    # the same compiled graph and kernels: equal to the last bit
    np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not hrnet.has_onnx, reason="built without ONNX (HR_ONNX)")
def test_export_onnx_runs_in_onnxruntime(pose_w18, tmp_path):
    """model.export_onnx writes what hrnet-export writes: ONNX Runtime gives our output, at two
    batch sizes (the batch is dynamic)."""
    import onnxruntime as ort
    _, path, model = pose_w18
    m = hrnet.Model("pose_w18", weights=path)
    info = m.export_onnx(str(tmp_path / "pose.onnx"), height=64, width=64)
    assert info["outputs"] == ["heatmaps"] and info["folded_batch_norms"] > 0
    sess = ort.InferenceSession(str(tmp_path / "pose.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 3, 64, 64), dtype=np.float32)
        got = sess.run(None, {"input": x})[0]
        assert got.shape == (n, 17, 16, 16)
        assert rel_err(got, m(x)) < 1e-4


def test_dlpack_round_trips(pose_w18):
    _, _, model = pose_w18
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    y = model(x)  # a torch tensor in, a torch tensor out
    assert isinstance(y, torch.Tensor) and y.shape == (1, 17, 16, 16)
    y_np = model(x.numpy())
    np.testing.assert_array_equal(y.numpy(), y_np)
    # through the DLPack protocol both ways, no copy: the arrays share the engine's memory
    a = np.from_dlpack(y)
    assert np.shares_memory(a, y.numpy())
    t = torch.from_dlpack(y_np)
    assert t.data_ptr() == y_np.ctypes.data
    # a strided (non-contiguous) view is read as it lies and gives the same result
    big = torch.zeros(1, 3, 64, 128)
    big[..., ::2] = x
    np.testing.assert_array_equal(model(big[..., ::2]).numpy(), y.numpy())
    # an output outlives the model and later calls
    z = hrnet.Model("pose_w18_small_v1")(np.ones((1, 3, 64, 64), np.float32))
    z_copy = z.copy()
    hrnet.Model("pose_w18_small_v1")(np.zeros((1, 3, 64, 64), np.float32))
    np.testing.assert_array_equal(z, z_copy)
    # any DLPack object (not numpy, not torch): a generic DLPack-capable array comes back
    class Capsule:
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, stream=None):
            return self.t.__dlpack__()

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()
    g = model(Capsule(x))
    assert isinstance(g, hrnet.Array) and g.shape == [1, 17, 16, 16] and g.device == "cpu"
    np.testing.assert_array_equal(np.from_dlpack(g), y.numpy())
    np.testing.assert_array_equal(torch.from_dlpack(g).numpy(), y.numpy())


def test_threads_share_a_model(pose_w18):
    """Calls release the GIL; calls on one model from several threads take turns and each gets
    its own input's output (to rounding: a new thread has OpenMP's default thread count, which
    sets the kernels' summation order)."""
    from concurrent.futures import ThreadPoolExecutor
    _, _, model = pose_w18
    xs = [np.random.default_rng(10 + i).standard_normal((1, 3, 64, 64), dtype=np.float32)
          for i in range(6)]
    want = [model(x) for x in xs]
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(model, xs))
    for g, w in zip(got, want):
        assert rel_err(g, w) < 5e-5


def test_errors_are_one_line(pose_w18, tmp_path):
    _, path, model = pose_w18
    cases = [
        (lambda: hrnet.Model(str(tmp_path / "missing.yaml")), "cannot open"),
        (lambda: hrnet.Model("pose_w18", weights=str(tmp_path / "missing.pth")), "missing.pth"),
        (lambda: hrnet.Model("pose_w99"), "w99"),
        (lambda: model(np.zeros((1, 3, 64, 64), np.float64)), "float"),
        (lambda: model(np.zeros((1, 3, 60, 64), np.float32)), "multiple of 32"),
        (lambda: model([1, 2, 3]), "must be an array"),
        (lambda: model.segment(np.zeros((64, 64, 3), np.uint8)), "seg"),
        (lambda: model.keypoints(np.zeros((64, 64), np.uint8)), "(H, W, 3)"),
        (lambda: model.keypoints(np.zeros((64, 64, 3), np.uint8), boxes=[[0, 0, np.nan, 4]]),
         "finite"),
        (lambda: hrnet.Model("pose_w18", device="tpu"), "device"),
    ]
    for fn, text in cases:
        with pytest.raises(hrnet.Error) as e:
            fn()
        msg = str(e.value)
        assert text in msg and "\n" not in msg, msg
    # a config of another family where a pose model is wanted: the det config is not a pose model
    seg_cfg = os.path.join(HERE, "..", "..", "configs", "seg_synth.yaml")
    with pytest.raises(hrnet.Error, match="keypoints"):
        hrnet.Model(seg_cfg).keypoints(np.zeros((64, 64, 3), np.uint8))
    # the weights of another model
    with pytest.raises(hrnet.Error):
        hrnet.Model("pose_w32", weights=path)


@pytest.fixture(scope="module")
def synth_pose(tmp_path_factory):
    need(SYNTH)
    root = tmp_path_factory.mktemp("synth")
    subprocess.run([SYNTH, "--out", str(root), "--train", "2", "--val", "2", "--seed", "4",
                    "--width", "192", "--height", "160", "--quiet"], check=True)
    images = sorted((root / "images" / "val2017").glob("*.jpg"))
    return root, str(images[0])


def test_pose_keypoints_equal_cpp_program(pose_w18, synth_pose, tmp_path):
    need(INFER)
    _, path, model = pose_w18
    _, image = synth_pose
    boxes = [[20.5, 10, 80, 120, 0.9], [60, 30, 90, 110, 0.6]]
    out = tmp_path / "kp.json"
    args = [INFER, "--model", "pose_w18", "--weights", path, "--image", image, "--json", str(out)]
    for b in boxes:
        args += ["--box", ",".join(str(v) for v in b[:4])]
    program(args)
    want = json.loads(out.read_text())["people"]
    got = model.predict(image, boxes=np.array(boxes, np.float32)[:, :4])  # the pose head's
    assert got["keypoints"].shape == (2, 17, 3)
    for p in range(2):
        np.testing.assert_allclose(got["keypoints"][p].reshape(-1), want[p]["keypoints"],
                                   rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(got["scores"][p], want[p]["score"], rtol=1e-5)


def test_image_array_equals_file(pose_w18, synth_pose, tmp_path):
    """An RGB uint8 array (H, W, 3), here decoded by Pillow from a lossless PNG, gives what the
    engine's own reading of the file gives."""
    from PIL import Image
    _, _, model = pose_w18
    _, image = synth_pose
    png = str(tmp_path / "person.png")
    Image.open(image).convert("RGB").save(png)
    pixels = np.asarray(Image.open(png).convert("RGB"))
    boxes = [[10, 5, 120, 140]]
    a = model.keypoints(png, boxes=boxes)
    b = model.keypoints(pixels, boxes=boxes)
    np.testing.assert_array_equal(a["keypoints"], b["keypoints"])
    # a non-contiguous array (every other column of a wider one) is read as it lies
    wide = np.zeros((pixels.shape[0], 2 * pixels.shape[1], 3), np.uint8)
    wide[:, ::2] = pixels
    np.testing.assert_array_equal(model.keypoints(wide[:, ::2], boxes=boxes)["keypoints"],
                                  a["keypoints"])


def infer_json(args, tmp_path):
    out = tmp_path / "infer.json"
    program([INFER] + args + ["--json", str(out)])
    return json.loads(out.read_text())


def test_segment_classify_equal_cpp_program(synth_pose, tmp_path):
    need(INFER)
    _, image = synth_pose
    # seg: a built-in HRNetV2 with its official initialisation, saved and read back
    seg = hrnet.Model("seg_w18_small_v1")
    seg.save(str(tmp_path / "seg.safetensors"))
    labels = seg.segment(image)
    want = infer_json(["--model", "seg_w18_small_v1", "--weights", str(tmp_path / "seg.safetensors"),
                       "--image", image], tmp_path)
    assert labels.shape == (want["height"], want["width"]) and labels.dtype == np.int64
    counts = np.bincount(labels.reshape(-1), minlength=19)
    shares = {c["class"]: c["share"] for c in want["classes"]}
    assert set(shares) == set(np.nonzero(counts)[0].tolist())
    for k, v in shares.items():
        assert abs(counts[k] / labels.size - v) < 1e-9
    assert seg.class_names[0] == "road"
    # cls: the top-5 of hrnet-infer
    cls = hrnet.Model("cls_w18_small_v1")
    cls.save(str(tmp_path / "cls.safetensors"))
    top = cls.classify(image, k=5)
    want = infer_json(["--model", "cls_w18_small_v1", "--weights", str(tmp_path / "cls.safetensors"),
                       "--image", image], tmp_path)["top5"]
    assert [t[0] for t in top] == [w["class"] for w in want]
    np.testing.assert_allclose([t[2] for t in top], [w["probability"] for w in want], rtol=1e-5)
    assert all(t[2] >= u[2] for t, u in zip(top, top[1:]))


def test_detect_equals_cpp_program(tmp_path):
    need(INFER)
    need(SYNTH)
    root = tmp_path / "det"
    subprocess.run([SYNTH, "--task", "det", "--out", str(root), "--train", "1", "--val", "1",
                    "--size", "160x128", "--seed", "2", "--quiet"], check=True)
    image = str(sorted((root / "val2017").glob("*.jpg"))[0])
    cfg = os.path.join(HERE, "..", "..", "configs", "det_synth.yaml")
    over = ["DATASET.ROOT", str(root)]
    # the official initialisation (focal-loss prior) scores nothing above the threshold: a
    # positive class bias makes objects appear, so that there is something to compare
    w = str(tmp_path / "det.safetensors")
    hrnet.Model(cfg, overrides=over).save(w)
    t = read_safetensors(w)
    t = {k: (v + 4.5 if k.endswith("cls_logits.bias") else v) for k, v in t.items()}
    write_safetensors(w, t, {})
    det = hrnet.Model(cfg, weights=w, overrides=over)
    got = det.detect(image)
    want = infer_json(["--config", cfg, "--weights", w, "--image", image, "--box-thre", "0"] +
                      sum([["--set", k, v] for k, v in zip(over[::2], over[1::2])], []), tmp_path)
    want = want["detections"]
    assert len(want) > 10 and len(got["scores"]) == len(want)
    order = np.argsort(-got["scores"], kind="stable")
    np.testing.assert_allclose(got["boxes"][order], [d["bbox"] for d in want], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got["scores"][order], [d["score"] for d in want], rtol=1e-5)
    assert [got["names"][i] for i in order] == [d["name"] for d in want]
    # every head output of the raw forward: class, box and centerness maps of each level
    maps = det.forward_all(np.zeros((1, 3, 128, 160), np.float32))
    assert len(maps) == 3 * 4 and maps[0].shape == (1, 5, 16, 20)


def test_train_interrupt_and_resume(tmp_path):
    need(SYNTH)
    root = tmp_path / "data"
    subprocess.run([SYNTH, "--out", str(root), "--train", "24", "--val", "4", "--seed", "6",
                    "--width", "160", "--height", "120", "--quiet"], check=True)
    cfg = tmp_path / "tiny.yaml"  # the program tests' tiny experiment, four epochs here
    text = open(os.path.join(HERE, "..", "data", "tiny_pose.yaml")).read()
    cfg.write_text(text.replace("@ROOT@", str(root)))
    over = ["TRAIN.END_EPOCH", "4", "ENGINE.THREADS", "1", "WORKERS", "1"]
    out = tmp_path / "out"
    # a child Python trains; Ctrl-C (SIGINT) once it has made progress
    script = textwrap.dedent(f"""\
        import sys, hrnet
        try:
            hrnet.train({str(cfg)!r}, overrides={over!r}, output_dir={str(out)!r})
        except hrnet.Interrupted as e:
            print("INTERRUPTED", e, flush=True)
            sys.exit(130)
        print("FINISHED", flush=True)
        """)
    env = dict(os.environ)
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 240
    for line in child.stdout:  # the first epoch's progress line ends when the epoch does
        lines.append(line)
        if "epoch 1/4" in line or time.time() > deadline:
            break
    child.send_signal(signal.SIGINT)
    rest, _ = child.communicate(timeout=240)
    text = "".join(lines) + rest
    assert child.returncode == 130, text
    assert "INTERRUPTED" in text and "checkpoint" in text, text
    assert "epoch 4/4" not in text, text  # stopped before the end
    assert (out / "checkpoint.safetensors").exists()
    # resumed, it runs to the end and evaluates
    r = hrnet.train(str(cfg), overrides=over, output_dir=str(out), resume=True)
    assert r["score_name"] == "AP" and 0.0 <= r["score"] <= 1.0
    assert set(["AP", "AP50"]) <= set(r["metrics"])
    # and hrnet.evaluate scores the final weights as hrnet-eval does
    e = hrnet.evaluate(str(cfg), weights=str(out / "final_state.safetensors"),
                       output_dir=str(tmp_path / "eval"))
    assert e["score_name"] == "AP" and e["count"] > 0
