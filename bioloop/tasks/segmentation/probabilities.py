"""How predicted probabilities are stored, and read back as float32 whatever the stored dtype.

``output_dtype`` (config) picks what ``bioloop predict`` writes per class: ``float32`` (exact),
``float16`` (about 3 significant digits) or ``uint8`` (``round(p * 255)``, as csc/cellmap write
probabilities; a step of 1/255). A uint8 image records ``{"bioloop": {"kind": "probability",
"probability_scale": 255}}`` in its group attributes; :func:`decoded` uses that record so that
process, agglomerate and evaluate see probabilities in [0, 1], and so a uint8 probability image is
never mistaken for labels. ``output_compressor`` picks the chunk codec: ``zstd`` (zarr's default),
``lz4`` (blosc lz4 with byte shuffle: faster to write, larger files) or ``none``.
"""

from __future__ import annotations

import attrs
import numpy as np
import zarr

from bioloop.data.ngff import Volume

OUTPUT_DTYPES = ("float32", "float16", "uint8")
COMPRESSORS = ("zstd", "lz4", "none")
UINT8_SCALE = 255


def encode(probs: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities in [0, 1] as the stored dtype (uint8: round(p * 255))."""
    if dtype == "uint8":
        return np.rint(np.clip(probs, 0.0, 1.0) * UINT8_SCALE).astype(np.uint8)
    return probs.astype(dtype, copy=False)


def attributes(dtype: str) -> dict:
    """What an image of this stored dtype records besides kind/class/raw."""
    return {"probability_scale": UINT8_SCALE} if dtype == "uint8" else {}


def compressors(name: str, zarr_format: int):
    """The ``compressors`` argument of zarr's ``create_array`` for ``output_compressor``."""
    if name == "zstd":
        return "auto"
    if name == "none":
        return None
    if zarr_format == 2:
        import numcodecs

        return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


@attrs.frozen
class _Scaled:
    """An array view that returns ``stored / scale`` as float32 (what Volume.read indexes)."""

    stored: object
    scale: float

    @property
    def shape(self):
        return self.stored.shape

    @property
    def dtype(self):
        return np.dtype(np.float32)

    @property
    def ndim(self):
        return len(self.stored.shape)

    def __getitem__(self, key):
        return np.asarray(self.stored[key], dtype=np.float32) * np.float32(1.0 / self.scale)


def probability_scale(path: str, storage_options=None) -> float | None:
    """The ``probability_scale`` predict recorded in the image group at ``path`` (None when absent)."""
    try:
        group = zarr.open_group(str(path), mode="r", storage_options=storage_options) if storage_options \
            else zarr.open_group(str(path), mode="r")
        record = dict(group.attrs).get("bioloop", {})
    except Exception:  # noqa: BLE001 - a plain array or a foreign image carries no record
        return None
    scale = record.get("probability_scale") if record.get("kind") == "probability" else None
    return float(scale) if scale else None


def decoded(volume: Volume, path: str, storage_options=None) -> Volume:
    """``volume`` reading float32 probabilities: integer-coded ones (uint8 from predict) rescaled to [0, 1],
    other float dtypes cast; integer images without predict's record (labels) are left as they are."""
    if volume.dtype.kind == "f" and volume.dtype != np.float32:  # float16 (or float64): computed in float32
        return attrs.evolve(volume, array=_Scaled(volume.array, 1.0))
    scale = probability_scale(path, storage_options) if volume.dtype.kind in "iu" else None
    if scale is None:
        return volume
    return attrs.evolve(volume, array=_Scaled(volume.array, scale))
