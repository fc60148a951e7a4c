"""The dataset's f-theta intrinsics as a ROS camera model.

PhysicalAI-AV cameras are calibrated with an f-theta model: pixel radius r = Σ fw_i·θ^i (i = 0…4)
of the angle θ between a ray and the optical axis. ROS's CameraInfo has no such model. The
closest is `equidistant` (the Kannala-Brandt fisheye model of OpenCV and image_geometry):
r = f·(θ + k1·θ³ + k2·θ⁵ + k3·θ⁷ + k4·θ⁹). It has odd powers only, so the f-theta polynomial
(which has θ⁰, θ² and θ⁴ terms too) is least-squares fitted over the angles the image covers, and
the largest radius error of the fit is reported. The exact f-theta coefficients travel in the bag's
metadata (custom_data) next to it; the model itself does not read intrinsics at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alpamayo_ros.tools.pai.dataset import FThetaIntrinsics

DISTORTION_MODEL = "equidistant"
_FIT_SAMPLES = 400


@dataclass(frozen=True)
class EquidistantFit:
    focal_px: float  # f (fx = fy)
    k: tuple[float, float, float, float]  # k1..k4
    theta_max_rad: float  # the fit covers 0 … theta_max (the farthest image corner)
    max_error_px: float  # largest |r_fit(θ) − r_ftheta(θ)| over that range

    def radius(self, theta: np.ndarray) -> np.ndarray:
        t = np.asarray(theta, dtype=np.float64)
        k1, k2, k3, k4 = self.k
        return self.focal_px * t * (1 + k1 * t**2 + k2 * t**4 + k3 * t**6 + k4 * t**8)


def ftheta_radius(intr: FThetaIntrinsics, theta: np.ndarray) -> np.ndarray:
    return np.polynomial.polynomial.polyval(np.asarray(theta, dtype=np.float64), intr.fw_poly)


def corner_angle(intr: FThetaIntrinsics) -> float:
    """θ of the image corner farthest from the principal point (the fit's range)."""
    corners = np.array([[0.0, 0.0], [intr.width, 0.0], [0.0, intr.height], [intr.width, intr.height]])
    r_max = float(np.max(np.hypot(corners[:, 0] - intr.cx, corners[:, 1] - intr.cy)))
    theta = float(np.polynomial.polynomial.polyval(r_max, intr.bw_poly))
    if not (0.0 < theta < np.pi) or not np.isfinite(theta):
        # bw_poly unusable: invert the forward polynomial on a grid (it is monotonic in the image).
        grid = np.linspace(0.0, np.pi * 0.999, 4096)
        r = ftheta_radius(intr, grid)
        inside = np.nonzero(r <= r_max)[0]
        theta = float(grid[inside[-1]]) if inside.size else float(grid[1])
    return theta


def fit_equidistant(intr: FThetaIntrinsics) -> EquidistantFit:
    """Least-squares equidistant model of an f-theta camera over the angles its image covers."""
    theta_max = corner_angle(intr)
    theta = np.linspace(0.0, theta_max, _FIT_SAMPLES)
    r = ftheta_radius(intr, theta)
    basis = np.stack([theta ** (2 * i + 1) for i in range(5)], axis=-1)
    coef, *_ = np.linalg.lstsq(basis, r, rcond=None)
    f = float(coef[0])
    if not f > 0:
        raise ValueError(f"f-theta polynomial {intr.fw_poly} does not describe a forward camera (fitted focal {f})")
    k = tuple(float(c / f) for c in coef[1:])
    err = float(np.max(np.abs(basis @ coef - r)))
    return EquidistantFit(f, (k[0], k[1], k[2], k[3]), theta_max, err)


def camera_info_fields(intr: FThetaIntrinsics, fit: EquidistantFit, width: int, height: int) -> dict:
    """CameraInfo fields (height, width, distortion_model, d, k, r, p) for frames of width x height
    (the calibration's resolution scaled if the video differs)."""
    sx, sy = width / intr.width, height / intr.height
    fx, fy, cx, cy = fit.focal_px * sx, fit.focal_px * sy, intr.cx * sx, intr.cy * sy
    return {
        "height": int(height),
        "width": int(width),
        "distortion_model": DISTORTION_MODEL,
        "d": np.array(fit.k, dtype=np.float64),
        "k": np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]),
        "r": np.eye(3).reshape(-1),
        "p": np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
    }
