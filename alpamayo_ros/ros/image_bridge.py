"""A small sensor_msgs image bridge (cv_bridge is unusable with these wheels: feasibility §3).

Decoding goes through the core's decoders (`core.image_preprocess.decode_raw/decode_compressed`),
which raise ImageDecodeError with a clear message; this module only reads message fields, applies
the optional crop, and encodes images into messages for tests, demos and benchmarks.
"""

from __future__ import annotations

import array

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from alpamayo_ros.core.image_preprocess import ImageDecodeError, decode_compressed, decode_raw

__all__ = [
    "ImageDecodeError",
    "apply_crop",
    "decode_image_msg",
    "decode_jpeg_reduced",
    "fast_resize",
    "rgb_to_compressed_msg",
    "rgb_to_image_msg",
]


def decode_image_msg(msg: Image | CompressedImage) -> np.ndarray:
    """Image or CompressedImage -> RGB uint8 (H, W, 3); raises ImageDecodeError."""
    if isinstance(msg, CompressedImage):
        return decode_compressed(np.frombuffer(msg.data, dtype=np.uint8), msg.format)
    return decode_raw(np.frombuffer(msg.data, dtype=np.uint8), int(msg.width), int(msg.height),
                      msg.encoding, int(msg.step))


_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_jpeg_reduced(msg: CompressedImage, factor: int) -> np.ndarray | None:
    """JPEG decoded at 1/factor size in the DCT domain (much cheaper than full size + resize).

    Returns None when the payload is not a JPEG (the caller falls back to the full decoder, which
    also produces the precise error); raises ImageDecodeError for a corrupt or truncated JPEG.
    """
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    fmt = msg.format.strip().lower()
    if factor not in _REDUCED_FLAGS or buf.size < 4 or buf[:2].tobytes() != b"\xff\xd8" or "png" in fmt:
        return None
    if b"\xff\xd9" not in buf[-64:].tobytes():
        raise ImageDecodeError(f"truncated JPEG payload ({buf.size} bytes, no end-of-image marker)")
    bgr = cv2.imdecode(buf, _REDUCED_FLAGS[factor] | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.size == 0:
        raise ImageDecodeError(f"corrupt or truncated JPEG payload ({buf.size} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def fast_resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """OpenCV area resize to the model's size (not the reference bicubic kernel: opt-in only)."""
    if rgb.shape[:2] == (height, width):
        return rgb
    interp = cv2.INTER_AREA if height <= rgb.shape[0] and width <= rgb.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(rgb, (width, height), interpolation=interp)


def apply_crop(rgb: np.ndarray, crop: tuple[int, int, int, int] | None) -> np.ndarray:
    """Crop (x, y, width, height) in source pixels; a crop outside the image is an input error."""
    if crop is None:
        return rgb
    x, y, w, h = crop
    if x + w > rgb.shape[1] or y + h > rgb.shape[0]:
        raise ImageDecodeError(
            f"crop {list(crop)} does not fit a {rgb.shape[1]}x{rgb.shape[0]} image (fix the cameras.*.crop parameter)")
    return rgb[y:y + h, x:x + w]


def rgb_to_image_msg(rgb: np.ndarray, encoding: str = "rgb8") -> Image:
    """RGB uint8 (H, W, 3) -> sensor_msgs/Image in rgb8, bgr8 or mono8 (header left to the caller)."""
    if encoding == "rgb8":
        arr = rgb
    elif encoding == "bgr8":
        arr = rgb[:, :, ::-1]
    elif encoding == "mono8":
        arr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    else:
        raise ValueError(f"unsupported encoding {encoding!r} (rgb8, bgr8, mono8)")
    arr = np.ascontiguousarray(arr)
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    return Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding, is_bigendian=0,
                 step=arr.shape[1] * channels, data=array.array("B", arr.tobytes()))


def rgb_to_compressed_msg(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> CompressedImage:
    """RGB uint8 -> sensor_msgs/CompressedImage (jpeg or png)."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, buf = cv2.imencode(".png", bgr)
    else:
        raise ValueError(f"unsupported format {fmt!r} (jpeg, png)")
    if not ok:
        raise ValueError("OpenCV could not encode the image")
    return CompressedImage(format=fmt, data=array.array("B", buf.tobytes()))
