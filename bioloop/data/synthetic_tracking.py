"""Synthetic multi-object tracking data with exact ground-truth identities, for the demo and the tests.

``make_tracking_dataset(root)`` renders elongated, striped "animals" moving smoothly over a textured
floor. They look alike but not the same (each has its own tint and stripe frequency), so identity can
be learned from looks and motion. With ``crossing``, objects 0 and 1 walk past each other and end
where the other began (their bodies overlap at the middle); with ``enter_leave`` the last object
walks in from the left border and out at the right. Free objects keep >= ``2 * disc_radius + 1`` px
apart. Layouts written under ``root``::

    tracking.mp4 + tracking.slp              SLEAP: nodes head/centroid/tail, tracks track_0.. (id = index)
    ctc/01/t000.tif, ctc/01_GT/TRA/           CTC 2D: grey raw tifs, disc markers labelled id + 1,
        man_track000.tif + man_track.txt        man_track.txt (L B E P, no parents)
    mot/SYN-01/gt/gt.txt + img1/000001.jpg    MOTChallenge: ids id + 1, body boxes

``make_ctc_3d(root)`` writes a small 3D CTC sequence (blobs, sphere markers, optionally one division).

``make_crossing_dataset(root)`` is the case where position alone is not enough: objects of clearly
different colours move in straight lines at one common speed, bouncing off the walls, so their paths
cross again and again; a detection is dropped while two objects are close (as if occluded) and at
random for short gaps, so tracks vanish at a crossing and reappear past it. A nearest-position
linker then swaps them; appearance tells them apart. Written as .slp + mp4 (the detected instances).
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import numpy as np
from scipy import ndimage

from bioloop.data.mp4 import write_mp4
from bioloop.errors import ConfigError

NODE_NAMES: tuple[str, ...] = ("head", "centroid", "tail")
FPS = 30.0
_HALF_LEN, _HALF_WID = 7.0, 4.0  # body ellipse semi-axes (px)
_MARGIN = 12.0  # free objects stay this far inside the frame
_CROSS_OFFSET = 4.5  # the crossing pair passes 2 * this apart


@attrs.frozen(eq=False)
class TrackingDataset:
    """Paths of every layout written (None when not asked for) and the exact ground truth.

    ``T`` frames, ``N`` objects; object ``i`` has track id ``ids[i] == i`` (.slp), CTC label and MOT id
    ``i + 1``. Coordinates are (x, y) frame pixels, pixel centres at integers; NaN = not in view."""

    root: str
    video_path: str | None
    slp_path: str | None
    ctc_root: str | None  # CTC dataset root: ctc_root/01, ctc_root/01_GT/TRA
    ctc_raw_dir: str | None
    ctc_tra_dir: str | None
    ctc_track_path: str | None
    mot_txt: str | None
    mot_img_dir: str | None
    images: np.ndarray  # (T, H, W, 3) uint8 RGB, the rendered frames
    points: np.ndarray  # (T, N, 3, 2) head, centroid, tail
    positions: np.ndarray  # (T, N, 2) centroids
    boxes: np.ndarray  # (T, N, 4) x0, y0, x1, y1 edges of each body's pixels in the frame
    visible: np.ndarray  # (T, N) bool, centroid inside the frame
    ids: np.ndarray  # (N,) 0..N-1
    ctc_table: np.ndarray  # (L, 4) man_track.txt rows L B E P
    crossing_pair: tuple[int, int] | None
    image_size: tuple[int, int]
    disc_radius: float
    node_names: tuple[str, ...] = NODE_NAMES


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _scripted(rng, T, N, H, W, crossing, enter_leave):
    """Positions (T, N, 2) / headings of the scripted objects; ``free`` marks the simulated ones."""
    pos, head = np.full((T, N, 2), np.nan), np.zeros((T, N, 2))
    free = np.ones(N, bool)
    if crossing and N >= 2:
        ang = rng.uniform(0, np.pi)
        u = np.array([np.cos(ang), np.sin(ang)])
        n = np.array([-u[1], u[0]])
        m = _MARGIN + _CROSS_OFFSET
        half = min(0.35 * max(W, H), (0.4 * W - m) / max(abs(u[0]), 1e-6), (0.4 * H - m) / max(abs(u[1]), 1e-6))
        c = np.array([W / 2, H / 2]) + rng.uniform(-0.1, 0.1, 2) * [W, H]
        dur = min(T, 40)
        s = _smoothstep((np.arange(T) - (T - dur) // 2) / max(dur - 1, 1))[:, None]
        pos[:, 0] = c + (2 * s - 1) * half * u + _CROSS_OFFSET * n
        pos[:, 1] = c - (2 * s - 1) * half * u - _CROSS_OFFSET * n
        head[:, 0], head[:, 1] = u, -u
        free[:2] = False
    if enter_leave and N >= 3:
        k = N - 1
        y = rng.uniform(_MARGIN, H - _MARGIN)
        a, b = T // 5, max(T - T // 5, T // 5 + 2)
        x = -15 + (W + 30) * np.clip((np.arange(T) - a) / (b - a), 0, 1)
        pos[:, k] = np.stack([x, np.full(T, y)], 1)
        head[:, k] = [1.0, 0.0]
        free[k] = False
    return pos, head, free


def _simulate(rng, T, N, H, W, crossing, enter_leave, min_dist):
    """Smooth random walks with soft repulsion (from each other, the scripted objects and the walls)."""
    pos, head, free = _scripted(rng, T, N, H, W, crossing, enter_leave)
    idx = np.flatnonzero(free)
    lo, hi = np.array([_MARGIN, _MARGIN]), np.array([W - 1 - _MARGIN, H - 1 - _MARGIN])
    for i in idx:  # start positions apart from everyone placed so far
        for _ in range(200):
            p = rng.uniform(lo, hi)
            others = pos[0][np.isfinite(pos[0, :, 0])]
            if not len(others) or np.min(np.linalg.norm(others - p, axis=1)) > 3 * min_dist:
                break
        pos[0, i] = p
    ang = rng.uniform(0, 2 * np.pi, len(idx))
    vel = 1.5 * np.stack([np.cos(ang), np.sin(ang)], 1)
    reach = 3 * min_dist
    for t in range(1, T):
        cur = pos[t - 1, idx]
        others = np.where(free[:, None], pos[t - 1], pos[t])
        d = cur[:, None, :] - others[None]
        dist = np.linalg.norm(d, axis=-1)
        dist[np.arange(len(idx)), idx] = np.inf
        dist = np.where(np.isfinite(dist), dist, np.inf)
        push = np.where(dist < reach, (reach - dist) / reach, 0.0)
        d = np.nan_to_num(d)
        vel = vel + 1.2 * (push[..., None] * d / np.maximum(dist, 1e-3)[..., None]).sum(1)
        vel = vel + rng.normal(0, 0.25, vel.shape)
        vel = vel + 0.3 * (np.clip(cur, lo, hi) - cur)
        speed = np.linalg.norm(vel, axis=1, keepdims=True)
        vel = vel / np.maximum(speed, 1e-6) * np.clip(speed, 0.6, 2.2)
        pos[t, idx] = cur + vel
    for i in idx:
        v = np.gradient(pos[:, i], axis=0) if T > 1 else np.array([[1.0, 0.0]])
        v = ndimage.uniform_filter1d(v, 5, axis=0, mode="nearest")
        head[:, i] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)
    return pos, head


def _too_close(pos, visible, min_dist) -> bool:
    d = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1)
    both = visible[:, :, None] & visible[:, None]
    n = pos.shape[1]
    both &= ~np.eye(n, dtype=bool)[None]
    return bool((np.where(both, d, np.inf) < min_dist).any())


def _render(H, W, pos, head, visible, rng, looks):
    """RGB frames (T, H, W, 3) and body boxes (T, N, 4)."""
    T, N = visible.shape
    floor = ndimage.gaussian_filter(rng.normal(0, 1, (H, W)), 3)
    floor = 70 + 12 * floor / (floor.std() + 1e-9)
    base = (np.repeat(floor[..., None], 3, 2) * np.array([1.0, 0.97, 0.9])).astype(np.float32)
    boxes = np.full((T, N, 4), np.nan)
    images = np.empty((T, H, W, 3), np.uint8)
    r = int(np.ceil(_HALF_LEN + 2))
    for t in range(T):
        img = base.copy()
        for i in np.flatnonzero(visible[t]):
            cx, cy = pos[t, i]
            x0, x1 = max(int(np.floor(cx)) - r, 0), min(int(np.ceil(cx)) + r + 1, W)
            y0, y1 = max(int(np.floor(cy)) - r, 0), min(int(np.ceil(cy)) + r + 1, H)
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
            hx, hy = head[t, i]
            u = (xx - cx) * hx + (yy - cy) * hy
            v = -(xx - cx) * hy + (yy - cy) * hx
            rad = np.sqrt((u / _HALF_LEN) ** 2 + (v / _HALF_WID) ** 2)
            cov = np.clip(0.5 - (rad - 1) * _HALF_WID, 0, 1)
            rgb, freq, phase = looks[i]
            tex = 1 + 0.3 * np.sin(2 * np.pi * freq * u + phase)
            spot = np.clip(1.8 - np.hypot(u - 0.7 * _HALF_LEN, v), 0, 1)  # a bright head spot
            colour = rgb * tex[..., None] * (1 - spot[..., None]) + 240 * spot[..., None]
            win = img[y0:y1, x0:x1]
            win += cov[..., None] * (colour - win)
            inside = cov > 0.5
            rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
            boxes[t, i] = [x0 + cols[0] - 0.5, y0 + rows[0] - 0.5, x0 + cols[-1] + 0.5, y0 + rows[-1] + 0.5]
        img += 2.0 * rng.standard_normal((H, W, 3), dtype=np.float32)
        images[t] = np.clip(img, 0, 255).round().astype(np.uint8)
    return images, boxes




def _write_slp(path: Path, video: Path, points: np.ndarray, visible: np.ndarray, hw) -> None:
    import sleap_io as sio

    T, N = visible.shape
    skeleton = sio.Skeleton(nodes=list(NODE_NAMES), edges=[("head", "centroid"), ("centroid", "tail")],
                            name="synthetic_object")
    meta = {"shape": [T, hw[0], hw[1], 3], "fps": FPS, "type": "MediaVideo", "filename": str(video),
            "bgr": True, "dataset": "", "input_format": "", "grayscale": False}
    vid = sio.Video(filename=str(video), open_backend=False, backend_metadata=meta)
    tracks = [sio.Track(name=f"track_{i}") for i in range(N)]
    frames = [sio.LabeledFrame(video=vid, frame_idx=t, instances=[
        sio.Instance.from_numpy(points[t, i], skeleton=skeleton, track=tracks[i])
        for i in range(N) if visible[t, i]]) for t in range(T)]
    sio.save_slp(sio.Labels(labeled_frames=frames, videos=[vid], skeletons=[skeleton], tracks=tracks),
                 str(path), verbose=False)


def _discs(shape, centres: np.ndarray, labels, radius: float, dtype=np.uint16) -> np.ndarray:
    """A label image with a disc (2D) / ball (3D) of ``radius`` around each finite centre (x, y[, z])."""
    out = np.zeros(shape, dtype)
    r = int(np.ceil(radius))
    for c, lab in zip(centres, labels):
        if not np.isfinite(c).all():
            continue
        rev = c[::-1]  # (z,) y, x
        lo = [max(int(np.floor(v)) - r, 0) for v in rev]
        hi = [min(int(np.ceil(v)) + r + 1, s) for v, s in zip(rev, shape)]
        if any(h <= l for l, h in zip(lo, hi)):
            continue
        grids = np.ogrid[tuple(slice(l, h) for l, h in zip(lo, hi))]
        d2 = sum((g - v) ** 2 for g, v in zip(grids, rev))
        win = out[tuple(slice(l, h) for l, h in zip(lo, hi))]
        win[d2 <= radius ** 2] = lab
    return out


def _track_table(present: np.ndarray, labels, parents=None) -> np.ndarray:
    rows = []
    for j, lab in enumerate(labels):
        frames = np.flatnonzero(present[:, j])
        if len(frames):
            rows.append([lab, frames[0], frames[-1], 0 if parents is None else parents[j]])
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _write_ctc(root: Path, images, pos, visible, radius, raw_dtype) -> tuple[Path, Path, Path, np.ndarray]:
    import tifffile

    raw, tra = root / "01", root / "01_GT" / "TRA"
    raw.mkdir(parents=True, exist_ok=True)
    tra.mkdir(parents=True, exist_ok=True)
    T, N = visible.shape
    grey = images.astype(np.float64).mean(-1)
    if np.dtype(raw_dtype) == np.uint16:
        grey = grey * 257.0
    digits = max(3, len(str(T - 1)))
    labels = np.arange(1, N + 1)
    for t in range(T):
        tifffile.imwrite(raw / f"t{t:0{digits}d}.tif", grey[t].round().astype(raw_dtype))
        mask = _discs(images.shape[1:3], np.where(visible[t][:, None], pos[t], np.nan), labels, radius)
        tifffile.imwrite(tra / f"man_track{t:0{digits}d}.tif", mask)
    table = _track_table(visible, labels)
    np.savetxt(tra / "man_track.txt", table, fmt="%d")
    return raw, tra, tra / "man_track.txt", table


def _write_mot(root: Path, images, boxes, visible) -> tuple[Path, Path]:
    import cv2

    seq = root / "SYN-01"
    img1, gt = seq / "img1", seq / "gt"
    img1.mkdir(parents=True, exist_ok=True)
    gt.mkdir(parents=True, exist_ok=True)
    lines = []
    for t in range(len(images)):
        cv2.imwrite(str(img1 / f"{t + 1:06d}.jpg"), images[t][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        for i in np.flatnonzero(visible[t]):
            x0, y0, x1, y1 = boxes[t, i]
            lines.append(f"{t + 1},{i + 1},{x0 + 0.5:g},{y0 + 0.5:g},{x1 - x0:g},{y1 - y0:g},1,-1,-1,-1\n")
    (gt / "gt.txt").write_text("".join(lines))
    (seq / "seqinfo.ini").write_text(f"[Sequence]\nname=SYN-01\nimDir=img1\nframeRate={FPS:g}\n"
                                     f"seqLength={len(images)}\nimWidth={images.shape[2]}\n"
                                     f"imHeight={images.shape[1]}\nimExt=.jpg\n")
    return gt / "gt.txt", img1


def make_tracking_dataset(root, *, n_frames: int = 50, n_objects: int = 5, image_size: tuple[int, int] = (128, 160),
                          seed: int = 0, crossing: bool = True, enter_leave: bool = False,
                          layouts=("slp", "ctc", "mot"), disc_radius: float = 3.0,
                          raw_dtype: str = "uint8") -> TrackingDataset:
    """Render and write the dataset (see the module doc); deterministic per ``seed``."""
    unknown = sorted(set(layouts) - {"slp", "ctc", "mot"})
    if unknown:
        raise ConfigError.at("make_tracking_dataset", "unknown layouts", got=unknown, fix="use 'slp', 'ctc', 'mot'")
    if n_frames < 1 or n_objects < 1:
        raise ConfigError.at("make_tracking_dataset", "n_frames and n_objects must be >= 1",
                             got=(n_frames, n_objects), fix="pass positive counts")
    if raw_dtype not in ("uint8", "uint16"):
        raise ConfigError.at("make_tracking_dataset", "raw_dtype must be 'uint8' or 'uint16'", got=raw_dtype)
    H, W = int(image_size[0]), int(image_size[1])
    rng = np.random.default_rng(seed)
    min_dist = 2 * disc_radius + 1
    room = max(W - 2 * _MARGIN, 0) * max(H - 2 * _MARGIN, 0)
    for _ in range(0 if n_objects * np.pi * (1.5 * min_dist) ** 2 > 0.5 * room else 30):
        pos, head = _simulate(rng, n_frames, n_objects, H, W, crossing, enter_leave, min_dist)
        visible = ((pos[..., 0] >= -0.5) & (pos[..., 0] < W - 0.5) & (pos[..., 1] >= -0.5) & (pos[..., 1] < H - 0.5))
        if not _too_close(pos, visible, min_dist):
            break
    else:
        raise ConfigError.at("make_tracking_dataset", "cannot keep the objects apart in this frame size",
                             got=(n_objects, image_size), fix="use fewer objects or a larger image_size")
    looks = [(np.array([175.0, 150.0, 120.0]) + 30 * rng.uniform(-1, 1, 3), rng.uniform(0.15, 0.45),
              rng.uniform(0, 2 * np.pi)) for _ in range(n_objects)]
    images, boxes = _render(H, W, pos, head, visible, rng, looks)
    pts = np.stack([pos + 0.8 * _HALF_LEN * head, pos, pos - 0.8 * _HALF_LEN * head], axis=2)
    inside = ((pts[..., 0] >= -0.5) & (pts[..., 0] < W - 0.5) & (pts[..., 1] >= -0.5) & (pts[..., 1] < H - 0.5))
    pts = np.where((inside & visible[..., None])[..., None], pts, np.nan)
    positions = np.where(visible[..., None], pos, np.nan)
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    video = slp = ctc = raw = tra = track = mot = img1 = None
    table = _track_table(visible, np.arange(1, n_objects + 1))
    if "slp" in layouts:
        video, slp = out / "tracking.mp4", out / "tracking.slp"
        write_mp4(video, images, FPS, "install opencv-python(-headless) with FFMPEG support or leave 'slp' out of layouts")
        _write_slp(slp, video, pts, visible, (H, W))
    if "ctc" in layouts:
        ctc = out / "ctc"
        raw, tra, track, table = _write_ctc(ctc, images, positions, visible, disc_radius, raw_dtype)
    if "mot" in layouts:
        mot, img1 = _write_mot(out / "mot", images, boxes, visible)
    s = lambda p: None if p is None else os.fspath(p)  # noqa: E731
    return TrackingDataset(root=s(out), video_path=s(video), slp_path=s(slp), ctc_root=s(ctc), ctc_raw_dir=s(raw),
                           ctc_tra_dir=s(tra), ctc_track_path=s(track), mot_txt=s(mot), mot_img_dir=s(img1),
                           images=images, points=pts, positions=positions, boxes=boxes, visible=visible,
                           ids=np.arange(n_objects), ctc_table=table,
                           crossing_pair=(0, 1) if crossing and n_objects >= 2 else None,
                           image_size=(H, W), disc_radius=float(disc_radius))


@attrs.frozen(eq=False)
class Ctc3dDataset:
    """A 3D CTC sequence: ``labels (L,)``, ``positions (T, L, 3)`` (x, y, z; NaN when absent), ``table``
    the man_track.txt rows; ``shape`` = (Z, H, W)."""

    root: str
    raw_dir: str
    tra_dir: str
    track_path: str
    labels: np.ndarray
    positions: np.ndarray
    table: np.ndarray
    shape: tuple[int, int, int]
    radius: float


def make_ctc_3d(root, *, n_frames: int = 8, n_objects: int = 3, shape: tuple[int, int, int] = (8, 48, 64),
                seed: int = 0, division: bool = True, radius: float = 2.5) -> Ctc3dDataset:
    """A small 3D CTC sequence (``root/01``, ``root/01_GT/TRA``): Gaussian blobs drifting slowly, ball
    markers of ``radius``; with ``division``, object 0 (label 1) splits at ``n_frames // 2`` into two
    daughters (the last two labels, parent 1) that move apart along x."""
    import tifffile

    Z, H, W = shape
    rng = np.random.default_rng(seed)
    slot = (W - 8) / n_objects
    if slot < 4 * radius + 6 or n_frames < 2:
        raise ConfigError.at("make_ctc_3d", "too many objects for the width (or fewer than 2 frames)",
                             got=(n_objects, shape, n_frames), fix="use fewer objects or a wider shape")
    start = np.stack([4 + slot * (np.arange(n_objects) + 0.5), rng.uniform(radius + 3, H - radius - 4, n_objects),
                      rng.uniform(min(radius, Z / 2 - 1), max(Z - 1 - radius, Z / 2), n_objects)], 1)
    step = rng.uniform(-0.3, 0.3, (n_objects, 3)) * [1, 1, 0.3]
    t = np.arange(n_frames)[:, None, None]
    tracks = start[None] + t * step[None]
    n_lab = n_objects + (2 if division else 0)
    pos = np.full((n_frames, n_lab, 3), np.nan)
    pos[:, :n_objects] = tracks
    parents = np.zeros(n_lab, np.int64)
    if division:
        k = n_frames // 2
        split = np.array([[0.9 * slot / 4, 0, 0]]) * (1 + 0.5 * (t[k:, 0] - k) / max(n_frames - k, 1))
        pos[k:, n_objects] = tracks[k:, 0] - split
        pos[k:, n_objects + 1] = tracks[k:, 0] + split
        pos[k:, 0] = np.nan
        parents[n_objects:] = 1
    labels = np.arange(1, n_lab + 1)
    out = Path(root)
    raw, tra = out / "01", out / "01_GT" / "TRA"
    raw.mkdir(parents=True, exist_ok=True)
    tra.mkdir(parents=True, exist_ok=True)
    zz, yy, xx = np.ogrid[:Z, :H, :W]
    for f in range(n_frames):
        img = np.full((Z, H, W), 100.0)
        for c in pos[f][np.isfinite(pos[f, :, 0])]:
            img += 2000 * np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2 + (zz - c[2]) ** 2) / (2 * radius ** 2))
        img += rng.normal(0, 20, img.shape)
        tifffile.imwrite(raw / f"t{f:03d}.tif", np.clip(img, 0, 65535).astype(np.uint16))
        tifffile.imwrite(tra / f"man_track{f:03d}.tif", _discs((Z, H, W), pos[f], labels, radius))
    table = _track_table(np.isfinite(pos[..., 0]), labels, parents)
    np.savetxt(tra / "man_track.txt", table, fmt="%d")
    return Ctc3dDataset(root=os.fspath(out), raw_dir=os.fspath(raw), tra_dir=os.fspath(tra),
                        track_path=os.fspath(tra / "man_track.txt"), labels=labels, positions=pos, table=table,
                        shape=(Z, H, W), radius=float(radius))


_COLOURS = np.array([[225, 45, 45], [45, 200, 60], [50, 80, 235], [235, 215, 40], [200, 60, 220], [40, 210, 215]],
                    dtype=np.float64)


def _bounce(rng, T, N, H, W, speed):
    """Straight paths at ``speed`` px/frame reflected at the walls (margin ``_MARGIN``): (T, N, 2), headings."""
    lo, hi = np.array([_MARGIN, _MARGIN]), np.array([W - 1 - _MARGIN, H - 1 - _MARGIN])
    p = rng.uniform(lo, hi, (N, 2))
    ang = rng.uniform(0, 2 * np.pi, N)
    v = speed * np.stack([np.cos(ang), np.sin(ang)], 1)
    pos, head = np.empty((T, N, 2)), np.empty((T, N, 2))
    for t in range(T):
        pos[t], head[t] = p, v / speed
        p = p + v
        for k in (0, 1):  # reflect at the walls
            low, high = p[:, k] < lo[k], p[:, k] > hi[k]
            p[low, k] = 2 * lo[k] - p[low, k]
            p[high, k] = 2 * hi[k] - p[high, k]
            v[low | high, k] *= -1
    return pos, head


def make_crossing_dataset(root, *, n_frames: int = 60, n_objects: int = 4, image_size: tuple[int, int] = (64, 96),
                          speed: float = 2.5, seed: int = 0, occlusion_dist: float = 12.0, gap_rate: float = 0.03,
                          max_gap: int = 4) -> TrackingDataset:
    """Distinctly coloured objects crossing at equal speed, with detection gaps (see the module doc).

    ``occlusion_dist``: both detections are dropped while two objects' centres are closer (px);
    ``gap_rate``: chance per object and frame that a random gap of 1..``max_gap`` frames starts.
    ``visible`` is True where an instance is in the .slp (the detections); every object is drawn in
    every frame. Deterministic per ``seed``; at most ``len(_COLOURS)`` objects."""
    if not 1 <= n_objects <= len(_COLOURS) or n_frames < 2:
        raise ConfigError.at("make_crossing_dataset", f"needs 1..{len(_COLOURS)} objects and >= 2 frames",
                             got=(n_objects, n_frames), fix="use fewer objects or more frames")
    H, W = int(image_size[0]), int(image_size[1])
    rng = np.random.default_rng(seed)
    pos, head = _bounce(rng, n_frames, n_objects, H, W, float(speed))
    d = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1) + np.eye(n_objects)[None] * 1e9
    detected = d.min(axis=2) >= occlusion_dist
    for i in range(n_objects):
        t = 0
        while t < n_frames:
            if rng.random() < gap_rate:
                g = int(rng.integers(1, max_gap + 1))
                detected[t:t + g, i] = False
                t += g
            t += 1
    looks = [(_COLOURS[i], rng.uniform(0.15, 0.45), rng.uniform(0, 2 * np.pi)) for i in range(n_objects)]
    images, boxes = _render(H, W, pos, head, np.ones((n_frames, n_objects), bool), rng, looks)
    pts = np.stack([pos + 0.8 * _HALF_LEN * head, pos, pos - 0.8 * _HALF_LEN * head], axis=2)
    pts = np.where(detected[..., None, None], pts, np.nan)
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    video, slp = out / "tracking.mp4", out / "tracking.slp"
    write_mp4(video, images, FPS, "install opencv-python(-headless) with FFMPEG support")
    _write_slp(slp, video, pts, detected, (H, W))
    return TrackingDataset(root=os.fspath(out), video_path=os.fspath(video), slp_path=os.fspath(slp), ctc_root=None,
                           ctc_raw_dir=None, ctc_tra_dir=None, ctc_track_path=None, mot_txt=None, mot_img_dir=None,
                           images=images, points=pts, positions=np.where(detected[..., None], pos, np.nan),
                           boxes=np.where(detected[..., None], boxes, np.nan), visible=detected,
                           ids=np.arange(n_objects), ctc_table=_track_table(detected, np.arange(1, n_objects + 1)),
                           crossing_pair=None, image_size=(H, W), disc_radius=0.0)
