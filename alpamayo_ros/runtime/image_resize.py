"""The exact (bit-identical) image resize through torch's own kernel, injected into core's preprocessing.

The reference resizes with torch's uint8 ``interpolate(bicubic, antialias=True)``; core reproduces
that integer arithmetic in NumPy (``core.image_preprocess.resize_bicubic_aa_u8``, 24–110 ms per
1080p frame). Where torch is installed (Thor ships PyTorch) the kernel itself runs here instead, on a
channels-last view of the HWC array (no copy in, none out): the same bytes in ~1–3 ms. core never
imports torch (DESIGN.md §2), so this lives in the runtime layer and the composition roots (the ROS
node, the CLI tools) pass it to ``build_planner(..., exact_resizer=...)``.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from alpamayo_ros.core.image_preprocess import ExactResizer, resize_bicubic_aa_u8


def torch_resize_bicubic_aa_u8(rgb: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """torch's uint8 antialiased bicubic resize of an RGB uint8 (H, W, 3) array: the reference's kernel."""
    import torch
    import torch.nn.functional as F

    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]  # channels-last memory
    with torch.inference_mode():
        out = F.interpolate(image, size=(out_h, out_w), mode="bicubic", antialias=True, align_corners=False)
    return np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())


def exact_resizer() -> ExactResizer:
    """torch's kernel when torch is installed (imported now, at configure, not at the first frame), else
    core's NumPy one (both bit-identical)."""
    if importlib.util.find_spec("torch") is None:
        return resize_bicubic_aa_u8
    importlib.import_module("torch.nn.functional")
    return torch_resize_bicubic_aa_u8


def planner_resizer(params: object) -> ExactResizer | None:
    """The resize a planner gets from node parameters: torch's exact kernel for `image_resize: exact`
    (torch is imported only then), None (core's default) otherwise: `fast` resizes before the planner."""
    return exact_resizer() if getattr(params, "image_resize", "exact") == "exact" else None
