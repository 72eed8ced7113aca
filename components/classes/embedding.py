"""SAM2 image-encoder embeddings pooled inside a crown mask (ALPS' "pseudo feature label").

ALPS upsamples the encoder's feature map bilinearly to the image size and takes the mask's features. We
do the same without building the upsampled map: with ``A`` (H x h) and ``B`` (W x w) the bilinear
interpolation matrices (``align_corners=False``, exactly ``torch.nn.functional.interpolate``'s rule, the
one SAM2 uses for its own masks), the upsampled map is ``F_up[:, r, c] = sum_ij A[r, i] B[c, j] F[:, i, j]``
and its mean over the mask pixels M is

    pooled = sum_ij (A_M^T M B_M)[i, j] F[:, i, j] / |M|

with ``A_M``, ``B_M`` the rows of the mask's crop: a (h x w) weight map per crown, no (C x H x W) array.

:func:`pool_embedding` takes an embedding that already exists, so pseudolabeling can pool the window
embedding it computed for its box prompts (no extra encoder pass).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def interpolation_matrix(out_index: np.ndarray, n_out: int, n_in: int) -> np.ndarray:
    """Rows ``out_index`` of the (n_out x n_in) bilinear interpolation matrix, ``align_corners=False``.

    Source coordinate ``s = max((i + 0.5) * n_in / n_out - 0.5, 0)``; weights ``1 - (s - floor(s))`` on
    ``floor(s)`` and ``s - floor(s)`` on ``min(floor(s) + 1, n_in - 1)`` (PyTorch's
    ``area_pixel_compute_source_index`` and ``upsample_bilinear2d``).
    """
    i = np.asarray(out_index, dtype=np.float64)
    s = np.maximum((i + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.floor(s).astype(np.int64)
    lam = s - i0
    i1 = np.minimum(i0 + 1, n_in - 1)
    m = np.zeros((i.size, n_in), dtype=np.float64)
    rows = np.arange(i.size)
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
    return m


def as_numpy(embedding: Any) -> np.ndarray:
    """A (C, h, w) float32 array from a numpy array or a torch tensor (any device or dtype), with a
    leading batch axis of 1 dropped."""
    if hasattr(embedding, "detach"):
        embedding = embedding.detach().float().cpu().numpy()
    a = np.asarray(embedding, dtype=np.float32)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"expected an embedding of shape (C, h, w), got {a.shape}")
    return a


def pool_embedding(
    embedding: Any, mask: np.ndarray, offset: tuple[int, int], image_hw: tuple[int, int]
) -> np.ndarray:
    """Mean of the bilinearly upsampled ``embedding`` (C, h, w) over the pixels of ``mask``.

    ``mask`` is a boolean crop whose top-left pixel is at ``offset`` (row, col) in the image the encoder
    saw (``image_hw`` = that image's height and width, padding included, before SAM2 resized it); crop
    pixels outside the image are ignored. Returns (C,) float32, NaN when no mask pixel is in the image.
    """
    f = as_numpy(embedding)
    c, h, w = f.shape
    H, W = image_hw
    rows = offset[0] + np.arange(mask.shape[0])
    cols = offset[1] + np.arange(mask.shape[1])
    keep_r, keep_c = (rows >= 0) & (rows < H), (cols >= 0) & (cols < W)
    m = np.asarray(mask, dtype=bool)[np.ix_(keep_r, keep_c)]
    count = int(m.sum())
    if count == 0:
        return np.full(c, np.nan, dtype=np.float32)
    a = interpolation_matrix(rows[keep_r], H, h)
    b = interpolation_matrix(cols[keep_c], W, w)
    weights = a.T @ m.astype(np.float64) @ b  # (h, w)
    return (np.tensordot(f.astype(np.float64), weights, axes=([1, 2], [0, 1])) / count).astype(np.float32)


class Sam2WindowEncoder:
    """One SAM2 image-encoder pass per window (``SAM2ImagePredictor.set_image``, bf16 autocast on CUDA)
    returning ``get_image_embedding()`` as a (256, 64, 64) float32 array for a 1024 px image."""

    def __init__(self, box_predictor: Any) -> None:
        self.box_predictor = box_predictor  # a crownsam.pseudolabel.sam2_model.Sam2BoxPredictor

    @property
    def forward_seconds(self) -> float:
        return self.box_predictor.forward_seconds

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        self.box_predictor.set_image(rgb)
        return as_numpy(self.box_predictor.predictor.get_image_embedding())
