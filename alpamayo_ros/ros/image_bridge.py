"""A small sensor_msgs image bridge (cv_bridge is unusable with these wheels: feasibility §3).

Decoding goes through the core's decoders (`core.image_preprocess.decode_raw/decode_compressed`),
which raise ImageDecodeError with a clear message; this module only reads message fields, applies
the optional crop, and encodes images into messages for tests, demos and benchmarks.

`image_dims` and `oversize_reason` read only the header fields (raw) or the first bytes of the
payload (the JPEG SOF / PNG IHDR segment), so the node can refuse an oversized or misfitting image
before it copies or decodes anything.
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
    "compressed_dims",
    "cropped_dims",
    "image_dims",
    "oversize_reason",
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


def cropped_dims(height: int, width: int, crop: tuple[int, int, int, int] | None) -> tuple[int, int]:
    """(height, width) after the crop (x, y, width, height); a crop outside the image is an input error."""
    if crop is None:
        return height, width
    x, y, w, h = crop
    if x + w > width or y + h > height:
        raise ImageDecodeError(
            f"crop {list(crop)} does not fit a {width}x{height} image (fix the cameras.*.crop parameter)")
    return h, w


def apply_crop(rgb: np.ndarray, crop: tuple[int, int, int, int] | None) -> np.ndarray:
    """Crop (x, y, width, height) in source pixels; a crop outside the image is an input error."""
    if crop is None:
        return rgb
    cropped_dims(rgb.shape[0], rgb.shape[1], crop)
    x, y, w, h = crop
    return rgb[y:y + h, x:x + w]


_HEADER_BYTES = 65536  # JPEG: APPn/DQT/DHT segments before the frame header fit easily
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame (not DHT/JPG/DAC)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def compressed_dims(head: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG or PNG header, or None when it cannot be read there."""
    if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR" and len(head) >= 24:
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    if not head.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 9 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker in _SOF_MARKERS:
            return int.from_bytes(head[i + 5:i + 7], "big"), int.from_bytes(head[i + 7:i + 9], "big")
        else:
            i += 2 + int.from_bytes(head[i + 2:i + 4], "big")
    return None


def image_dims(msg: Image | CompressedImage) -> tuple[int, int] | None:
    """(height, width) the message decodes to, read from its header; None when unknown."""
    if isinstance(msg, CompressedImage):
        return compressed_dims(bytes(msg.data[:_HEADER_BYTES]))
    return int(msg.height), int(msg.width)


def oversize_reason(msg: Image | CompressedImage, dims: tuple[int, int] | None, max_bytes: int) -> str:
    """Why the image is over `max_bytes` (payload, declared rows, or decoded RGB), or ""."""
    payload = len(msg.data)
    if payload > max_bytes:
        return f"payload of {payload} bytes exceeds max_image_bytes={max_bytes}"
    rows = int(msg.height) * int(msg.step) if isinstance(msg, Image) else 0
    if rows > max_bytes:
        return f"a {msg.width}x{msg.height} {msg.encoding} image is {rows} bytes, over max_image_bytes={max_bytes}"
    if dims is not None and 3 * dims[0] * dims[1] > max_bytes:
        return (f"decodes to {dims[1]}x{dims[0]} RGB = {3 * dims[0] * dims[1]} bytes, over "
                f"max_image_bytes={max_bytes}")
    return ""


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
