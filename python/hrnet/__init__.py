"""HRNet engine for Python: HRNet models from the authors' YAML files or built-in names, official
checkpoints, inference on numpy arrays and DLPack tensors (PyTorch CPU/CUDA), each task's
prediction (pose keypoints, segmentation label maps, classification top-k, detection boxes), ONNX
export, and the trainer's training and evaluation.

    import hrnet
    model = hrnet.Model("w32_256x192_adam_lr1e-3.yaml", weights="pose_hrnet_w32_256x192.pth")
    people = model.keypoints("image.jpg", boxes=[[100, 50, 120, 300]])
    print(people["keypoints"])          # (P, 17, 3): x, y, score in image pixels

See docs/PYTHON.md.
"""
from ._hrnet import (  # noqa: F401
    Array,
    Error,
    Interrupted,
    Model,
    builtin_models,
    cuda_available,
    evaluate,
    get_num_threads,
    has_onnx,
    set_num_threads,
    train,
)

__all__ = ["Array", "Error", "Interrupted", "Model", "builtin_models", "cuda_available", "evaluate",
           "get_num_threads", "has_onnx", "set_num_threads", "train"]
