"""Colour science shared by the transmitter's colour naming and the receiver's colour-word parsing."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# sRGB (linear) to CIE XYZ under D65, and the D65 white point.
_SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_D65 = np.array([0.95047, 1.0, 1.08883])


def srgb_to_lab(rgb: NDArray[np.floating]) -> NDArray[np.float64]:
    """sRGB values in 0..1 (last axis R, G, B) to CIELAB L*, a*, b* under D65."""
    c = np.asarray(rgb, np.float64)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    lab = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)
    return np.asarray(lab, np.float64)
