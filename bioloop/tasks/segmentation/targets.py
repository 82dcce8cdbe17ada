"""Training targets derived on the fly from instance labels, for touching objects.

With ``instance_targets`` set (and ``label_layout = "instances"``) a training patch keeps its
instance ids through augmentation; ``derive`` then turns the augmented id patch into one of

- ``"boundaries"``: channels ``<class>_fg`` (any id > 0) and ``<class>_boundary`` (object voxels
  within ``boundary_width`` voxels of another id or of background);
- ``"affinities"``: one channel ``<class>_aff<k>`` per offset ``o``: 1 where voxel ``u`` and
  ``u + o`` carry the same id > 0, else 0; plus ``<class>_fg`` when ``foreground`` is set;
- ``"distance"``: one channel ``<class>_distance`` = tanh(d / distance_scale), d the distance
  (voxels) from an object voxel to the nearest voxel of another id or of background (1 on the
  object's own boundary), 0 on background.

Every target is a probability-like value in [0, 1], so the masked BCE trains it and predict's
sigmoid writes it. Voxels whose target cannot be known are NaN (ignored by the loss and the
metrics): an affinity whose offset leaves the patch or touches an unannotated (NaN) voxel, a
boundary next to unannotated voxels, a distance that the patch border or unannotated voxels
could shorten. Arrays are spatial only: (y, x) for 2D patches, (z, y, x) for 3D.
"""

from __future__ import annotations

from typing import Literal

import attrs
import numpy as np
from scipy import ndimage

from bioloop.config import validators as v
from bioloop.config.schema import setting


@attrs.frozen(kw_only=True)
class InstanceTargets:
    """Targets derived from instance labels for touching objects (boundaries, affinities, distance)."""

    kind: Literal["boundaries", "affinities", "distance"] = setting(
        doc="'boundaries' (foreground + boundary), 'affinities' (one channel per offset), 'distance' "
            "(tanh of the distance to the object's border)")
    offsets: list[tuple[int, ...]] | None = setting(
        None, "affinities: voxel offsets, (y, x) for 2D patches and (z, y, x) for 3D; long-range ones such as "
              "(0, 9) help agglomeration; None = the nearest neighbour along each axis")
    foreground: bool = setting(True, "affinities: add a foreground channel (background voxels are left out "
                                     "of the instances); False for labels without background (dense EM)")
    boundary_width: int = setting(1, "boundaries: voxels of an object this close to another id are boundary",
                                  validator=v.at_least(1))
    distance_scale: float = setting(4.0, "distance: voxels; the target is tanh(distance / distance_scale)",
                                    validator=v.greater_than(0))

    def check(self, spatial_dims: int | None = None) -> list[str]:
        problems = []
        if self.offsets is not None:
            if not self.offsets:
                problems.append("offsets: expected at least one offset (got [])")
            for o in self.offsets:
                if spatial_dims is not None and len(o) != spatial_dims:
                    problems.append(f"offsets: {spatial_dims}D patches need {spatial_dims} numbers per offset "
                                    f"(got {tuple(o)!r})")
                    break
                if not any(o):
                    problems.append(f"offsets: an offset must not be all zeros (got {tuple(o)!r})")
                    break
        return problems

    def offsets_for(self, spatial_dims: int) -> list[tuple[int, ...]]:
        if self.offsets is not None:
            return [tuple(int(a) for a in o) for o in self.offsets]
        return [tuple(int(a == b) for b in range(spatial_dims)) for a in range(spatial_dims)]

    def channels(self, name: str, spatial_dims: int) -> list[str]:
        """Output channel names (one model output and one predicted array each) for class ``name``."""
        if self.kind == "boundaries":
            return [f"{name}_fg", f"{name}_boundary"]
        if self.kind == "distance":
            return [f"{name}_distance"]
        affs = [f"{name}_aff{k}" for k in range(len(self.offsets_for(spatial_dims)))]
        return affs + ([f"{name}_fg"] if self.foreground else [])

    def state(self, spatial_dims: int) -> dict:
        """Plain data for checkpoints and `bioloop process`."""
        return {"kind": self.kind, "offsets": [list(o) for o in self.offsets_for(spatial_dims)],
                "foreground": self.foreground, "boundary_width": self.boundary_width,
                "distance_scale": self.distance_scale, "spatial_dims": spatial_dims}


def output_channels(cfg) -> list[str]:
    """The model's output channels: the classes, or the derived target channels of the one class."""
    targets = getattr(cfg, "instance_targets", None)
    if targets is None:
        return list(cfg.classes)
    return targets.channels(cfg.classes[0], cfg.spatial_dims)


def compact_ids(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Instance ids of a patch as float32 1..K (exact: few ids per patch), 0 background, NaN outside."""
    ids, inverse = np.unique(values, return_inverse=True)
    small = np.arange(len(ids), dtype=np.float32) + (0 if ids[0] == 0 else 1)
    out = small[inverse.reshape(values.shape)]
    return np.where(inside, out, np.float32(np.nan)).astype(np.float32)


def derive(ids: np.ndarray, targets: InstanceTargets, scale=None) -> np.ndarray:
    """(C, *S) float32 targets from a float id patch (0 background, NaN unannotated)."""
    ids = np.asarray(ids, np.float32)
    if targets.kind == "affinities":
        affs = affinities(ids, targets.offsets_for(ids.ndim))
        if targets.foreground:
            affs = np.concatenate([affs, foreground(ids)[None]])
        return affs
    if targets.kind == "boundaries":
        return np.stack([foreground(ids), boundaries(ids, targets.boundary_width)])
    return distance(ids, targets.distance_scale, scale)[None]


def foreground(ids: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(ids), np.float32(np.nan), (ids > 0).astype(np.float32))


def _pair_views(shape, offset):
    """Slices (source, shifted) so that source[u] and shifted[u] are voxels u and u + offset."""
    src, dst = [], []
    for n, o in zip(shape, offset):
        src.append(slice(max(0, -o), n - max(0, o)))
        dst.append(slice(max(0, o), n - max(0, -o)))
    return tuple(src), tuple(dst)


def affinities(ids: np.ndarray, offsets) -> np.ndarray:
    """(K, *S): 1 where u and u + offset share an id > 0, 0 where they differ or are background, NaN unknown."""
    out = np.full((len(offsets), *ids.shape), np.nan, np.float32)
    for k, offset in enumerate(offsets):
        if any(abs(o) >= n for o, n in zip(offset, ids.shape)):
            continue  # the offset leaves the patch everywhere
        src, dst = _pair_views(ids.shape, offset)
        a, b = ids[src], ids[dst]
        same = ((a == b) & (a > 0)).astype(np.float32)
        out[(k, *src)] = np.where(np.isnan(a) | np.isnan(b), np.float32(np.nan), same)
    return out


def _cross(ndim: int, width: int) -> np.ndarray:
    return ndimage.iterate_structure(ndimage.generate_binary_structure(ndim, 1), width)


def boundaries(ids: np.ndarray, width: int = 1) -> np.ndarray:
    """Object voxels within ``width`` face steps of another id or background: 1; other known voxels 0."""
    unknown = np.isnan(ids)
    footprint = _cross(ids.ndim, width)
    high = ndimage.maximum_filter(np.where(unknown, -np.inf, ids), footprint=footprint, mode="nearest")
    low = ndimage.minimum_filter(np.where(unknown, np.inf, ids), footprint=footprint, mode="nearest")
    edge = ((high > ids) | (low < ids)) & (ids > 0)
    near_unknown = ndimage.binary_dilation(unknown, footprint) if unknown.any() else unknown
    out = edge.astype(np.float32)
    out[near_unknown & ~edge] = np.nan
    out[unknown] = np.nan
    return out


def _edge_distance(shape, sampling) -> np.ndarray:
    """Distance from each voxel to just outside the patch (voxels, per-axis sampling)."""
    d = np.full(shape, np.inf, np.float32)
    for axis, (n, s) in enumerate(zip(shape, sampling)):
        if n == 1:
            continue  # a 2D slice stored with z = 1: no border along z
        pos = np.arange(n, dtype=np.float32)
        view = [1] * len(shape)
        view[axis] = n
        d = np.minimum(d, (np.minimum(pos + 1, n - pos) * s).reshape(view))
    return d


def distance(ids: np.ndarray, scale: float, voxel_size=None) -> np.ndarray:
    """tanh(d / scale): d = 1 + distance (voxels) from an object voxel to its own boundary layer; 0 on background."""
    sampling = np.ones(ids.ndim) if voxel_size is None else np.asarray(voxel_size, float) / min(voxel_size)
    unknown = np.isnan(ids)
    fg = ids > 0
    edge = boundaries(np.where(unknown, 0, ids), 1) > 0  # unknown counted as outside here
    d = np.where(fg, ndimage.distance_transform_edt(fg & ~edge, sampling=sampling) + 1, 0).astype(np.float32)
    cap = np.float32(3 * scale)  # tanh(3) = 0.995: larger distances need not be exact
    limit = _edge_distance(ids.shape, sampling)
    if unknown.any():
        limit = np.minimum(limit, ndimage.distance_transform_edt(~unknown, sampling=sampling))
    out = np.tanh(d / np.float32(scale)).astype(np.float32)
    out[fg & (np.minimum(d, cap) > limit + 1)] = np.nan  # a nearer border may lie outside the patch
    out[unknown] = np.nan
    return out
