"""Qwen3-VL image preprocessing (spec §1.2) in NumPy, plus sensor_msgs payload decoders.

Pipeline per frame (run once, when the frame arrives): decode → RGB uint8 (H, W, 3) → smart resize
(1080×1920 → 320×576) → (x − 127.5)/127.5 in float32 → patchify to ``(N, 1536)`` rows and
``grid_thw = (1, H/16, W/16)``.

Resize fidelity. The reference runs transformers' torchvision-backed ``Qwen2VLImageProcessor(Fast)`` on
uint8 CPU tensors, i.e. torch's native uint8 antialiased bicubic (``interpolate(..., "bicubic",
antialias=True)``): Keys a=−0.5 kernel stretched by the downscale factor, weights normalised per output
pixel, quantised to int16 with a per-axis precision chosen from the largest weight, a horizontal pass
to a uint8 buffer, then a vertical pass, each ``(Σ w·x + 2^(p−1)) >> p`` clamped to [0, 255].
``resize_method="exact"`` (default) reproduces that integer arithmetic, so the result is bit-identical
to torchvision (checked in test/core/test_image_preprocess.py against torch and both transformers
processors). The exact resize can be injected (``exact_resizer``): ``alpamayo_ros.runtime.image_resize``
runs torch's own kernel when torch is installed (~20× faster, bit-identical); core itself never imports
torch, so the NumPy kernel here is the default and the fallback. ``resize_method="opencv"`` uses ``cv2.resize(INTER_AREA)``, which is faster but not the
reference kernel: on random and natural-like images it differs by several uint8 levels (measured by
benchmarks/bench_model_inputs.py and reported in docs/model_inputs.md), so it is opt-in only.
The PIL-backed ``Qwen2VLImageProcessorPil`` uses 22-bit weights and differs from torch by ≤1 level.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache

import cv2
import numpy as np

from .model_config import ProcessorConfig

_DEFAULT = ProcessorConfig()

ExactResizer = Callable[[np.ndarray, int, int], np.ndarray]
"""(rgb uint8 (H, W, 3), out_h, out_w) -> uint8 (out_h, out_w, 3), bit-identical to ``resize_bicubic_aa_u8``."""


class ImageDecodeError(ValueError):
    """A sensor_msgs payload that cannot be turned into an RGB image (the message says why)."""


@dataclass(frozen=True)
class PreprocessedFrame:
    """One camera frame after the resize; cached and reused by the ticks that include it.

    Only the resized uint8 image is stored (553 KB at 320×576 instead of 4.4 MB of float rows); the
    normalised rows are built on first access (≈3 ms) and then kept, since the runtime reads them at
    most once per frame (its vision-embedding cache is keyed by ``key``).
    """

    camera_id: int
    stamp_ns: int
    resized: np.ndarray  # uint8 (h, w, 3), h and w multiples of patch*merge
    source_hw: tuple[int, int]
    cfg: ProcessorConfig = _DEFAULT

    @property
    def key(self) -> tuple[int, int]:
        return (self.camera_id, self.stamp_ns)

    @cached_property
    def _patches(self) -> tuple[np.ndarray, np.ndarray]:
        return patchify(self.resized, self.cfg)

    @property
    def pixel_rows(self) -> np.ndarray:
        """float32 (N, 1536)."""
        return self._patches[0]

    @property
    def grid_thw(self) -> np.ndarray:
        """int64 (3,) = (1, h/16, w/16)."""
        p = self.cfg.patch_size
        return np.array([1, self.resized.shape[0] // p, self.resized.shape[1] // p], dtype=np.int64)

    @property
    def num_llm_tokens(self) -> int:
        g = self.grid_thw
        return int(g[0] * g[1] * g[2]) // (self.cfg.merge_size**2)


# ---------------------------------------------------------------------------------------------------
# smart resize


def smart_resize(height: int, width: int, factor: int = 32, min_pixels: int = 163840,
                 max_pixels: int = 196608) -> tuple[int, int]:
    """Target (h, w): multiples of ``factor`` with h·w in [min_pixels, max_pixels] (spec §1.2)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got {height}x{width}")
    # Python's round() is half-to-even, as in the reference.
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


# ---------------------------------------------------------------------------------------------------
# exact uint8 antialiased bicubic (torch's CPU kernel)


def _keys_cubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return 0.0


@dataclass(frozen=True)
class _AxisWeights:
    index: np.ndarray  # int64 (out, K): input index per tap (padded taps repeat a valid index)
    weight: np.ndarray  # int32 (out, K): fixed-point weights (0 on padded taps)
    precision: int


@lru_cache(maxsize=64)
def _axis_weights(in_size: int, out_size: int) -> _AxisWeights:
    """Fixed-point weights of one axis, computed in float64 in the same order as torch."""
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    ksize = int(math.ceil(support)) * 2 + 1
    index = np.zeros((out_size, ksize), dtype=np.int64)
    wf = np.zeros((out_size, ksize), dtype=np.float64)
    wt_max = 0.0
    for i in range(out_size):
        center = scale * (i + 0.5)
        xmin = max(int(center - support + 0.5), 0)  # int() truncates toward zero like a C cast
        xsize = min(int(center + support + 0.5), in_size) - xmin
        xsize = min(max(xsize, 0), ksize)
        ws = [_keys_cubic((j + xmin - center + 0.5) * invscale) for j in range(xsize)]
        total = 0.0
        for w in ws:  # sequential sum, as in C (np.sum would be pairwise)
            total += w
        if total != 0.0:
            ws = [w / total for w in ws]
            wt_max = max([wt_max, *ws])
        wf[i, :xsize] = ws
        index[i, :xsize] = np.arange(xmin, xmin + xsize)
        index[i, xsize:] = xmin
    precision = 0
    while precision < 22 and int(0.5 + wt_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = wf * float(1 << precision)
    wi = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int32)
    return _AxisWeights(index=index, weight=wi, precision=precision)


def _pass_rows(src: np.ndarray, aw: _AxisWeights) -> np.ndarray:
    """Resample the rows of a uint8 (N_in, M) array to (N_out, M): contiguous row gathers per tap."""
    acc = np.full((aw.index.shape[0], src.shape[1]), 1 << (aw.precision - 1), dtype=np.int32)
    tmp = np.empty_like(acc)
    for k in range(aw.index.shape[1]):
        w = aw.weight[:, k]
        if not w.any():
            continue
        np.multiply(src[aw.index[:, k]], w[:, None], out=tmp)
        acc += tmp
    acc >>= aw.precision  # arithmetic shift, as in C
    np.clip(acc, 0, 255, out=acc)
    return acc.astype(np.uint8)


def resize_bicubic_aa_u8(rgb: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bit-exact NumPy version of torch's uint8 ``interpolate(bicubic, antialias=True)`` on CPU."""
    h, w, c = rgb.shape
    img = rgb
    if out_w != w:  # horizontal first, then vertical (same order and uint8 intermediate as torch)
        cols = np.ascontiguousarray(img.transpose(1, 0, 2)).reshape(w, h * c)
        cols = _pass_rows(cols, _axis_weights(w, out_w))
        img = np.ascontiguousarray(cols.reshape(out_w, h, c).transpose(1, 0, 2))
    if out_h != h:
        img = _pass_rows(np.ascontiguousarray(img).reshape(h, -1), _axis_weights(h, out_h)).reshape(out_h, out_w, c)
    return np.ascontiguousarray(img)


def resize_rgb(rgb: np.ndarray, out_h: int, out_w: int, method: str = "exact",
               exact_resizer: ExactResizer | None = None) -> np.ndarray:
    if method == "exact":
        if (out_h, out_w) == rgb.shape[:2]:
            return rgb
        return (exact_resizer or resize_bicubic_aa_u8)(rgb, out_h, out_w)
    if method == "opencv":
        if (out_h, out_w) == rgb.shape[:2]:
            return rgb
        interp = cv2.INTER_AREA if out_h <= rgb.shape[0] and out_w <= rgb.shape[1] else cv2.INTER_CUBIC
        return cv2.resize(rgb, (out_w, out_h), interpolation=interp)
    raise ValueError(f"resize method {method!r} must be 'exact' or 'opencv'")


# ---------------------------------------------------------------------------------------------------
# normalise + patchify


@lru_cache(maxsize=8)
def _normalize_lut(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32 LUT of (v − 255·mean)/(255·std), computed in float32 as the reference does."""
    v = np.arange(256, dtype=np.float32)
    m = np.asarray(mean, dtype=np.float32) * np.float32(255.0)
    s = np.asarray(std, dtype=np.float32) * np.float32(255.0)
    return ((v[None, :] - m[:, None]) / s[:, None]).astype(np.float32)


def patchify(resized: np.ndarray, cfg: ProcessorConfig = _DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (H, W, 3) → normalised rows (gh·gw, 3·T·P·P) ordered (h_blk, w_blk, my, mx)."""
    h, w, _ = resized.shape
    p, m, t = cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size
    if h % (p * m) or w % (p * m):
        raise ValueError(f"resized image {h}x{w} is not a multiple of {p * m}")
    gh, gw = h // p, w // p
    # (h_blk, my, py, w_blk, mx, px, c) -> (h_blk, w_blk, my, mx, c, py, px): permute the uint8 bytes first.
    x = resized.reshape(gh // m, m, p, gw // m, m, p, 3).transpose(0, 3, 1, 4, 6, 2, 5)
    x = np.ascontiguousarray(x).reshape(gh * gw, 3, p * p)
    lut = _normalize_lut(tuple(cfg.image_mean), tuple(cfg.image_std))
    vals = lut[np.arange(3)[None, :, None], x]  # (N, 3, P*P) float32
    rows = np.empty((gh * gw, 3, t, p * p), dtype=np.float32)
    rows[:] = vals[:, :, None, :]  # the single frame is duplicated along time
    return rows.reshape(gh * gw, 3 * t * p * p), np.array([1, gh, gw], dtype=np.int64)


def preprocess_image(rgb: np.ndarray, cfg: ProcessorConfig = _DEFAULT, resize_method: str = "exact",
                     exact_resizer: ExactResizer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (H, W, 3) → (pixel_rows float32 (N, 1536), grid_thw int64 (3,)), spec §1.2."""
    rgb = _check_rgb(rgb)
    oh, ow = smart_resize(rgb.shape[0], rgb.shape[1], cfg.factor, cfg.min_pixels, cfg.max_pixels)
    return patchify(resize_rgb(rgb, oh, ow, resize_method, exact_resizer), cfg)


def preprocess_frame(rgb: np.ndarray, camera_id: int, stamp_ns: int, cfg: ProcessorConfig = _DEFAULT,
                     resize_method: str = "exact", exact_resizer: ExactResizer | None = None) -> PreprocessedFrame:
    """Resize once on arrival; the rows follow lazily (see ``PreprocessedFrame``)."""
    rgb = _check_rgb(rgb)
    oh, ow = smart_resize(rgb.shape[0], rgb.shape[1], cfg.factor, cfg.min_pixels, cfg.max_pixels)
    resized = resize_rgb(rgb, oh, ow, resize_method, exact_resizer)
    resized.setflags(write=False)
    return PreprocessedFrame(int(camera_id), int(stamp_ns), resized, (int(rgb.shape[0]), int(rgb.shape[1])), cfg)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        desc = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ImageDecodeError(f"expected an RGB uint8 array (H, W, 3), got {desc}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageDecodeError(f"empty image {rgb.shape[0]}x{rgb.shape[1]}")
    return rgb


# ---------------------------------------------------------------------------------------------------
# sensor_msgs decoders

_RAW_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1, "8uc3": 3, "8uc4": 4}


def decode_raw(data: bytes | bytearray | memoryview | np.ndarray, width: int, height: int, encoding: str,
               step: int | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` fields → RGB uint8 (H, W, 3). ``8UC3``/``8UC4`` are read as BGR(A), as OpenCV does."""
    enc = encoding.strip().lower()
    if enc not in _RAW_CHANNELS:
        raise ImageDecodeError(f"unsupported image encoding {encoding!r} (supported: {sorted(_RAW_CHANNELS)})")
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has zero size ({width}x{height})")
    ch = _RAW_CHANNELS[enc]
    row = width * ch
    step = row if step is None or step == 0 else int(step)
    if step < row:
        raise ImageDecodeError(f"step {step} is smaller than width*channels = {row} for {encoding}")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    if buf.dtype != np.uint8:
        raise ImageDecodeError(f"raw image data must be bytes/uint8, got {buf.dtype}")
    need = step * (height - 1) + row
    if buf.size < need:
        raise ImageDecodeError(
            f"truncated image data: {buf.size} bytes for {width}x{height} {encoding} with step {step} (need {need})"
        )
    if buf.size >= step * height:
        img = buf[: step * height].reshape(height, step)[:, :row]
    else:  # last row without padding
        img = np.lib.stride_tricks.as_strided(buf, (height, row), (step, 1))
    img = img.reshape(height, width, ch) if ch > 1 else img
    if enc == "rgb8":
        return np.ascontiguousarray(img)
    # OpenCV's converters accept padded rows and are ~8x faster than a NumPy channel flip.
    code = {"bgr8": cv2.COLOR_BGR2RGB, "8uc3": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
            "bgra8": cv2.COLOR_BGRA2RGB, "8uc4": cv2.COLOR_BGRA2RGB, "mono8": cv2.COLOR_GRAY2RGB,
            "8uc1": cv2.COLOR_GRAY2RGB}[enc]
    return cv2.cvtColor(img, code)


_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decode_compressed(data: bytes | bytearray | memoryview | np.ndarray, format: str = "") -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG) → RGB uint8 (H, W, 3).

    ``format`` is the message field, e.g. ``"jpeg"``, ``"png"`` or image_transport's
    ``"bgr8; jpeg compressed bgr8"``; an empty format is sniffed from the magic bytes.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    if buf.size == 0:
        raise ImageDecodeError("empty compressed image payload")
    head = buf[:8].tobytes()
    fmt = format.strip().lower()
    if "jpeg" in fmt or "jpg" in fmt:
        kind = "jpeg"
    elif "png" in fmt:
        kind = "png"
    elif fmt == "":
        kind = "jpeg" if head.startswith(_JPEG_MAGIC) else "png" if head.startswith(_PNG_MAGIC) else ""
        if not kind:
            raise ImageDecodeError("compressed image with empty format is neither JPEG nor PNG")
    else:
        raise ImageDecodeError(f"unsupported compressed format {format!r} (JPEG and PNG are supported)")
    magic = _JPEG_MAGIC if kind == "jpeg" else _PNG_MAGIC
    if not head.startswith(magic):
        raise ImageDecodeError(f"payload does not start with the {kind.upper()} signature (format {format!r})")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.size == 0:
        raise ImageDecodeError(f"corrupt or truncated {kind.upper()} payload ({buf.size} bytes)")
    if kind == "jpeg" and b"\xff\xd9" not in buf[-64:].tobytes():
        # libjpeg pads a truncated stream with grey and only warns; the frame is not trustworthy.
        raise ImageDecodeError(f"truncated JPEG payload ({buf.size} bytes, no end-of-image marker)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
