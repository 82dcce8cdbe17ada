"""A synthetic labeled pose dataset in the DeepLabCut / Lightning Pose layout, for the demo and the tests.

``make_pose_dataset(root)`` renders simple top-view "animals" (body, head, ears, front paws, tail) walking
smoothly over a textured floor past a vertical post, and writes::

    root/labeled-data/<video>/img0000.png   labeled frames (RGB PNG; the number is the video frame index)
    root/CollectedData.csv                  DLC CSV (scorer/bodyparts/coords; + individuals if multi-animal)
    root/videos/<video>.mp4                 every frame of the video (mp4v)
    root/labels.slp                         the same labels for SLEAP (sleap-io)

Each keypoint carries a small anti-aliased coloured disk rendered analytically, centred exactly on the
keypoint (pixel centres at integer coordinates). Left/right partners share a colour, so a mirrored animal
looks like a real one and a horizontal flip only needs the names swapped. A keypoint that the post or an
animal drawn later comes within 1.5 px of, or that lies outside the frame, is NaN in the labels.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import attrs
import numpy as np
from scipy import ndimage

from bioloop.data.mp4 import write_mp4
from bioloop.errors import ConfigError, DataError

SKELETON_NAMES: tuple[str, ...] = ("nose", "ear_left", "ear_right", "paw_left", "paw_right",
                                   "spine", "tail_base", "tail_tip")
FLIP_PAIRS: list[tuple[str, str]] = [("ear_left", "ear_right"), ("paw_left", "paw_right")]
EDGES: list[tuple[str, str]] = [("nose", "ear_left"), ("nose", "ear_right"), ("nose", "spine"),
                                ("spine", "paw_left"), ("spine", "paw_right"), ("spine", "tail_base"),
                                ("tail_base", "tail_tip")]
KEYPOINT_COLOURS: dict[str, tuple[int, int, int]] = {  # RGB of the disk drawn on each keypoint
    "nose": (230, 30, 30), "ear_left": (30, 210, 30), "ear_right": (30, 210, 30),
    "paw_left": (40, 90, 255), "paw_right": (40, 90, 255), "spine": (250, 220, 0),
    "tail_base": (230, 0, 230), "tail_tip": (0, 230, 230)}
SCORER = "bioloop"
FPS = 30.0
_BODY_RGB = np.array([185.0, 160.0, 125.0])
_POST_RGB = np.array([55.0, 55.0, 68.0])
_NOISE_SIGMA = 3.0
_HIDE_MARGIN = 1.0  # a keypoint is missing once anything drawn over it comes within 1.5 px of it
_PERIOD = 60.0  # frames per loop of the walking path: the motion per frame does not depend on n_frames


@attrs.frozen(eq=False)
class PoseDataset:
    """Paths and ground truth. ``N`` labeled frames, ``A`` animals, ``K`` keypoints; coordinates are (x, y)
    frame pixels with pixel centres at integers; NaN = missing. Boxes are x1, y1, x2, y2 of the whole
    rendered animal (pixel edges, clipped to the frame; NaN when no pixel of it is in view)."""

    root: str
    csv_path: str
    slp_path: str
    video_names: tuple[str, ...]
    video_paths: tuple[str, ...]  # absolute mp4 paths, one per video
    image_relpaths: tuple[str, ...]  # CSV index column, e.g. "labeled-data/video0/img0000.png"
    image_paths: tuple[str, ...]  # absolute PNG paths, same order as the CSV rows
    video_index: np.ndarray  # (N,) which video each labeled frame comes from
    frame_index: np.ndarray  # (N,) frame number inside that video
    images: np.ndarray  # (N, H, W, 3) uint8 RGB, the pixels of the PNGs
    keypoints: np.ndarray  # (N, A, K, 2) float64
    boxes: np.ndarray  # (N, A, 4) float64
    video_keypoints: tuple[np.ndarray, ...]  # per video (n_frames, A, K, 2), every frame
    video_boxes: tuple[np.ndarray, ...]  # per video (n_frames, A, 4)
    individuals: tuple[str, ...]
    image_size: tuple[int, int]  # (H, W)
    keypoint_names: tuple[str, ...] = SKELETON_NAMES
    flip_pairs: tuple[tuple[str, str], ...] = tuple(FLIP_PAIRS)
    edges: tuple[tuple[str, str], ...] = tuple(EDGES)
    scorer: str = SCORER
    fps: float = FPS

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation of keypoint indices that swaps every left/right pair (for horizontal flips)."""
        return flip_permutation(self.keypoint_names, self.flip_pairs)


def flip_permutation(names, pairs) -> np.ndarray:
    """``perm`` such that ``keypoints[..., perm, :]`` swaps each (left, right) pair of ``names``."""
    perm = np.arange(len(names))
    for left, right in pairs:
        i, j = names.index(left), names.index(right)
        perm[i], perm[j] = j, i
    return perm


def make_pose_dataset(root: str | os.PathLike, *, n_frames: int = 60, image_size: tuple[int, int] = (128, 160),
                      n_animals: int = 1, n_videos: int = 2, seed: int = 0, video: bool = True,
                      label_every: int = 1) -> PoseDataset:
    """Render ``n_videos`` videos of ``n_frames`` frames each and write the labeled dataset under ``root``.

    Every ``label_every``-th frame is labeled (PNG + CSV + .slp); the mp4 (``video=True``) holds all frames.
    Deterministic per ``seed``.
    """
    where = "make_pose_dataset"
    h, w = _check_args(where, n_frames, image_size, n_animals, n_videos, label_every)
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    rngs = np.random.default_rng(seed).spawn(n_videos)
    names = tuple(f"video{v}" for v in range(n_videos))
    individuals = tuple(f"animal{i}" for i in range(n_animals))
    video_paths, video_kps, video_boxes = [], [], []
    rel, images, kps, boxes, vid_idx, frame_idx = [], [], [], [], [], []
    for v, (name, rng) in enumerate(zip(names, rngs)):
        frames, vk, vb = _render_video(rng, n_frames, h, w, n_animals)
        video_kps.append(vk)
        video_boxes.append(vb)
        folder = root / "labeled-data" / name
        folder.mkdir(parents=True, exist_ok=True)
        for t in range(0, n_frames, label_every):
            relpath = f"labeled-data/{name}/img{t:04d}.png"
            _imwrite(root / relpath, frames[t])
            rel.append(relpath)
            images.append(frames[t])
            kps.append(vk[t])
            boxes.append(vb[t])
            vid_idx.append(v)
            frame_idx.append(t)
        path = root / "videos" / f"{name}.mp4"
        if video:
            write_mp4(path, frames, FPS, "install opencv-python(-headless) with FFMPEG support or pass video=False")
        video_paths.append(str(path))
    keypoints = np.stack(kps)
    csv_path = str(root / "CollectedData.csv")
    _write_dlc_csv(csv_path, rel, keypoints, individuals)
    slp_path = str(root / "labels.slp")
    _write_slp(slp_path, video_paths, (n_frames, h, w, 3), np.array(vid_idx), np.array(frame_idx), keypoints,
               individuals)
    return PoseDataset(root=str(root), csv_path=csv_path, slp_path=slp_path, video_names=names,
                       video_paths=tuple(video_paths), image_relpaths=tuple(rel),
                       image_paths=tuple(str(root / r) for r in rel), video_index=np.array(vid_idx),
                       frame_index=np.array(frame_idx), images=np.stack(images), keypoints=keypoints,
                       boxes=np.stack(boxes), video_keypoints=tuple(video_kps), video_boxes=tuple(video_boxes),
                       individuals=individuals, image_size=(h, w))


def _check_args(where, n_frames, image_size, n_animals, n_videos, label_every) -> tuple[int, int]:
    for key, value, low in (("n_frames", n_frames, 1), ("n_animals", n_animals, 1), ("n_videos", n_videos, 1),
                            ("label_every", label_every, 1)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError.at(f"{where}({key}=...)", f"{key} must be an integer >= {low}", got=value)
    try:
        h, w = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ConfigError.at(f"{where}(image_size=...)", "image_size must be (height, width)",
                             got=image_size) from None
    if h < 32 or w < 32 or h % 2 or w % 2:
        raise ConfigError.at(f"{where}(image_size=...)", "image_size must be even and at least 32 per side",
                             got=image_size, fix="use e.g. (128, 160)")
    return h, w


# ---------------------------------------------------------------- motion and geometry

def _render_video(rng, n_frames, h, w, n_animals):
    """Frames (T, H, W, 3) uint8, keypoints (T, A, K, 2) and boxes (T, A, 4) of one video."""
    background = _background(rng, h, w)
    post_x = w * (0.5 + rng.choice([-1, 1]) * rng.uniform(0.25, 0.35))  # off-centre: crossed now and then
    post_half = max(2.0, 0.02 * w)
    base = min(h, w) * (0.16 if n_animals == 1 else 0.12)
    animals = [_animal_params(rng, h, w, base * rng.uniform(0.9, 1.1)) for _ in range(n_animals)]
    post = ("box", (post_x - post_half, post_x + post_half), _POST_RGB)
    frames = np.empty((n_frames, h, w, 3), np.uint8)
    kps = np.full((n_frames, n_animals, len(SKELETON_NAMES), 2), np.nan)
    boxes = np.full((n_frames, n_animals, 4), np.nan)
    for t in range(n_frames):
        img = background.copy()
        shapes = [_animal_shapes(p, t) for p in animals]
        for i, (animal, pts) in enumerate(shapes):
            box = [np.inf, np.inf, -np.inf, -np.inf]
            for shape in animal:
                _paint(img, shape, box)
            if box[0] <= box[2]:
                boxes[t, i] = box
            hidden = _coverage(post, pts[:, 0], pts[:, 1], grow=_HIDE_MARGIN) > 0
            for later, _ in shapes[i + 1:]:
                for shape in later:
                    hidden |= _coverage(shape, pts[:, 0], pts[:, 1], grow=_HIDE_MARGIN) > 0
            outside = (pts[:, 0] < -0.5) | (pts[:, 0] >= w - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] >= h - 0.5)
            kps[t, i] = np.where((hidden | outside)[:, None], np.nan, pts)
        _paint(img, post, None)
        img += rng.normal(0.0, _NOISE_SIGMA, img.shape)
        frames[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return frames, kps, boxes


def _background(rng, h, w) -> np.ndarray:
    """A floor texture: large soft blotches plus fine grain, warm grey, float RGB."""
    coarse = ndimage.gaussian_filter(rng.normal(size=(h, w)), 6.0)
    fine = ndimage.gaussian_filter(rng.normal(size=(h, w)), 0.8)
    value = 95 + 25 * coarse / (coarse.std() + 1e-9) + 10 * fine / (fine.std() + 1e-9)
    return value[..., None] * np.array([1.0, 0.93, 0.82])


def _animal_params(rng, h, w, a) -> dict:
    """A Lissajous walking path inside the frame and gait/tail phases for one animal of half-length ``a``."""
    wx = 2 * math.pi / _PERIOD * rng.uniform(0.8, 1.2)
    return {"a": a, "cx": (w - 1) / 2, "cy": (h - 1) / 2,
            "ax": max(1.0, w / 2 - 1.6 * a) * rng.uniform(0.8, 1.0),
            "ay": max(1.0, h / 2 - 1.6 * a) * rng.uniform(0.8, 1.0),
            "wx": wx * rng.choice([-1, 1]), "wy": wx * rng.uniform(1.6, 2.2), "px": rng.uniform(0, 2 * math.pi),
            "py": rng.uniform(0, 2 * math.pi), "gait": rng.uniform(0, 2 * math.pi),
            "rgb": _BODY_RGB * rng.uniform(0.9, 1.05)}


def _animal_shapes(p: dict, t: int) -> tuple[list, np.ndarray]:
    """Shapes to draw (back to front) and the (K, 2) keypoints of animal ``p`` at frame ``t``."""
    a = p["a"]
    c = np.array([p["cx"] + p["ax"] * math.sin(p["wx"] * t + p["px"]),
                  p["cy"] + p["ay"] * math.sin(p["wy"] * t + p["py"])])
    vel = np.array([p["ax"] * p["wx"] * math.cos(p["wx"] * t + p["px"]),
                    p["ay"] * p["wy"] * math.cos(p["wy"] * t + p["py"])])
    theta = math.atan2(vel[1], vel[0])
    g = 2 * math.pi * t / 12.0 + p["gait"]
    fwd = np.array([math.cos(theta), math.sin(theta)])
    right = np.array([-fwd[1], fwd[0]])  # the animal's right, seen from above with image y pointing down
    yaw = theta + 0.3 * math.sin(0.5 * g)
    hfwd = np.array([math.cos(yaw), math.sin(yaw)])
    hright = np.array([-hfwd[1], hfwd[0]])
    neck = c + 0.85 * a * fwd
    tail_base = c - a * fwd
    wag = math.pi + theta + 0.45 * math.sin(0.7 * g)
    tail_tip = tail_base + 1.1 * a * np.array([math.cos(wag), math.sin(wag)])
    swing = 0.2 * math.sin(g)
    pts = np.stack([
        neck + 0.8 * a * hfwd,  # nose
        neck + 0.3 * a * hfwd - 0.3 * a * hright,  # ear_left
        neck + 0.3 * a * hfwd + 0.3 * a * hright,  # ear_right
        c + (0.55 + swing) * a * fwd - 0.62 * a * right,  # paw_left
        c + (0.55 - swing) * a * fwd + 0.62 * a * right,  # paw_right
        c,  # spine
        tail_base,
        tail_tip])
    body, dark = p["rgb"], p["rgb"] * 0.8
    shapes = [("capsule", (tail_base, tail_tip, max(1.0, 0.09 * a)), dark),
              ("ellipse", (pts[3], 0.16 * a, 0.12 * a, theta), dark),
              ("ellipse", (pts[4], 0.16 * a, 0.12 * a, theta), dark),
              ("ellipse", (c, a, 0.5 * a, theta), body),
              ("ellipse", (neck + 0.35 * a * hfwd, 0.45 * a, 0.3 * a, yaw), body * 1.08)]
    radius = max(2.0, 0.1 * a)
    shapes += [("disk", (pt, radius), np.array(KEYPOINT_COLOURS[n], float)) for n, pt in zip(SKELETON_NAMES, pts)]
    return shapes, pts


# ---------------------------------------------------------------- analytic anti-aliased coverage

def _coverage(shape, x: np.ndarray, y: np.ndarray, grow: float = 0.0) -> np.ndarray:
    """Fraction in [0, 1] of the pixel centred at (x, y) covered by ``shape`` (signed distance + 0.5 px ramp);
    ``grow`` dilates the shape by that many pixels."""
    kind, params, _ = shape
    if kind == "disk":
        (cx, cy), r = params
        sdf = np.hypot(x - cx, y - cy) - r
    elif kind == "ellipse":
        (cx, cy), ra, rb, angle = params
        dx, dy = x - cx, y - cy
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        k0 = np.hypot(u / ra, v / rb)
        k1 = np.hypot(u / ra ** 2, v / rb ** 2)
        sdf = k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)  # first-order distance to the ellipse outline
    elif kind == "capsule":
        p0, p1, r = params
        d = p1 - p0
        s = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / max(float(d @ d), 1e-12), 0.0, 1.0)
        sdf = np.hypot(x - p0[0] - s * d[0], y - p0[1] - s * d[1]) - r
    else:  # "box": a full-height vertical band between x0 and x1
        x0, x1 = params
        sdf = np.maximum(x0 - x, x - x1) + 0.0 * y
    return np.clip(0.5 + grow - sdf, 0.0, 1.0)


def _paint(img: np.ndarray, shape, box: list | None) -> None:
    """Composite ``shape`` into ``img`` (float RGB) inside its bounding window; grow ``box`` (x1, y1, x2, y2,
    pixel edges) by the pixels it covers more than half."""
    kind, params, rgb = shape
    h, w = img.shape[:2]
    if kind == "disk":
        (cx, cy), r = params
        lo, hi = (cx - r, cy - r), (cx + r, cy + r)
    elif kind == "ellipse":
        (cx, cy), ra, rb, _ = params
        lo, hi = (cx - ra, cy - ra), (cx + ra, cy + ra)
    elif kind == "capsule":
        p0, p1, r = params
        lo, hi = np.minimum(p0, p1) - r, np.maximum(p0, p1) + r
    else:
        lo, hi = (params[0], 0), (params[1], h - 1)
    x0, y0 = max(0, math.floor(lo[0]) - 1), max(0, math.floor(lo[1]) - 1)
    x1, y1 = min(w, math.ceil(hi[0]) + 2), min(h, math.ceil(hi[1]) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    cov = _coverage(shape, xs, ys)
    window = img[y0:y1, x0:x1]
    window += cov[..., None] * (rgb - window)
    if box is not None:
        inside = cov > 0.5
        rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
        if rows.size:
            box[0] = min(box[0], x0 + cols[0] - 0.5)
            box[1] = min(box[1], y0 + rows[0] - 0.5)
            box[2] = max(box[2], x0 + cols[-1] + 0.5)
            box[3] = max(box[3], y0 + rows[-1] + 0.5)


# ---------------------------------------------------------------- writers

def _imwrite(path: Path, rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), rgb[..., ::-1]):
        raise DataError.at(str(path), "could not write the PNG frame", fix="check the folder is writable")




def _write_dlc_csv(path: str, relpaths, keypoints: np.ndarray, individuals) -> None:
    """DLC CSV: header rows scorer/[individuals/]bodyparts/coords, then one row per image, empty = missing."""
    multi = len(individuals) > 1
    cols = [(ind, name, c) for ind in individuals for name in SKELETON_NAMES for c in ("x", "y")]
    header = [["scorer"] + [SCORER] * len(cols)]
    if multi:
        header.append(["individuals"] + [c[0] for c in cols])
    header += [["bodyparts"] + [c[1] for c in cols], ["coords"] + [c[2] for c in cols]]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows(header)
        for rel, kp in zip(relpaths, keypoints):
            writer.writerow([rel] + ["" if np.isnan(v) else repr(float(v)) for v in kp.reshape(-1)])


def _write_slp(path: str, video_paths, video_shape, vid_idx, frame_idx, keypoints, individuals) -> None:
    import sleap_io as sio

    skeleton = sio.Skeleton(nodes=list(SKELETON_NAMES), edges=list(EDGES), symmetries=list(FLIP_PAIRS),
                            name="synthetic_animal")
    videos = [sio.Video(filename=p, open_backend=False, backend_metadata={"shape": video_shape})
              for p in video_paths]
    tracks = [sio.Track(name=n) for n in individuals] if len(individuals) > 1 else []
    frames = []
    for v, t, kp in zip(vid_idx, frame_idx, keypoints):
        instances = [sio.Instance.from_numpy(kp[i], skeleton=skeleton, track=tracks[i] if tracks else None)
                     for i in range(len(individuals)) if not np.isnan(kp[i]).all()]
        frames.append(sio.LabeledFrame(video=videos[v], frame_idx=int(t), instances=instances))
    labels = sio.Labels(labeled_frames=frames, videos=videos, skeletons=[skeleton], tracks=tracks)
    sio.save_slp(labels, path, verbose=False)


# ---------------------------------------------------------------- two cameras
@attrs.frozen(eq=False)
class MultiViewPoseDataset:
    """A Lightning Pose multi-view project: per view a labels CSV, labeled images and session videos.

    ``keypoints`` is (N, V, K, 2) frame pixels (NaN = missing) in the CSVs' row order; ``view_transforms``
    the 2x3 affine map from the first view's pixels to each view's (the identity for the first)."""

    root: str
    view_names: tuple[str, ...]
    csv_paths: tuple[str, ...]  # one per view, CollectedData_<view>.csv
    video_paths: tuple[tuple[str, ...], ...]  # per view, per session: videos/<session>_<view>.mp4
    image_relpaths: tuple[tuple[str, ...], ...]  # per view, the CSV index column
    keypoints: np.ndarray
    view_transforms: np.ndarray  # (V, 2, 3)
    image_size: tuple[int, int]
    keypoint_names: tuple[str, ...] = SKELETON_NAMES


def make_multiview_pose_dataset(root: str | os.PathLike, *, n_frames: int = 40, image_size: tuple[int, int] = (96, 96),
                                n_sessions: int = 2, views: tuple[str, ...] = ("top", "side"), seed: int = 0,
                                label_every: int = 1) -> MultiViewPoseDataset:
    """Render the same animal seen by ``len(views)`` cameras, in Lightning Pose's multi-view layout::

        root/CollectedData_<view>.csv                 one labels CSV per view, the same rows in the same order
        root/labeled-data/<session>_<view>/img0000.png
        root/videos/<session>_<view>.mp4              every frame, one video per view per session

    The first camera sees the scene of ``make_pose_dataset``; camera v > 0 sees it through a fixed affine map
    (rotation, scaling, shift: an orthographic camera), so the views' keypoints of one body part are images of one
    point (rank-2 relation: a multi-view PCA with 3 components holds them). A keypoint hidden in the first view is
    hidden in every view; one mapped outside a frame is NaN in that view. Deterministic per ``seed``.
    """
    import cv2

    where = "make_multiview_pose_dataset"
    h, w = _check_args(where, n_frames, image_size, 1, n_sessions, label_every)
    views = tuple(str(v) for v in views)
    if len(views) < 2 or len(set(views)) != len(views):
        raise ConfigError.at(f"{where}(views=...)", "at least two distinct view names are needed", got=views)
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    rng_views = np.random.default_rng([seed, 1])
    transforms = [np.array([[1.0, 0, 0], [0, 1.0, 0]])]
    for _ in views[1:]:
        angle, scale = rng_views.uniform(20, 40) * rng_views.choice([-1, 1]), rng_views.uniform(0.8, 0.9)
        m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, scale)
        m[:, 2] += rng_views.uniform(-0.05, 0.05, 2) * (w, h)
        transforms.append(m)
    rngs = np.random.default_rng(seed).spawn(n_sessions)
    rel = [[] for _ in views]
    kps, videos = [], [[] for _ in views]
    for s, rng in enumerate(rngs):
        frames, vk, _ = _render_video(rng, n_frames, h, w, 1)
        session = f"session{s}"
        for v, (view, m) in enumerate(zip(views, transforms)):
            if v == 0:
                seen, pts = frames, vk[:, 0]
            else:
                seen = np.stack([cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                                 for f in frames])
                pts = vk[:, 0] @ m[:, :2].T + m[:, 2]
                outside = (pts[..., 0] < -0.5) | (pts[..., 0] >= w - 0.5) | (pts[..., 1] < -0.5) | \
                          (pts[..., 1] >= h - 0.5)
                pts = np.where(outside[..., None], np.nan, pts)
            if v == 0:
                kps_session = np.empty((n_frames, len(views), len(SKELETON_NAMES), 2))
            kps_session[:, v] = pts
            folder = root / "labeled-data" / f"{session}_{view}"
            folder.mkdir(parents=True, exist_ok=True)
            for t in range(0, n_frames, label_every):
                relpath = f"labeled-data/{session}_{view}/img{t:04d}.png"
                _imwrite(root / relpath, seen[t])
                rel[v].append(relpath)
            path = root / "videos" / f"{session}_{view}.mp4"
            write_mp4(path, seen, FPS, "install opencv-python(-headless) with FFMPEG support")
            videos[v].append(str(path))
        kps.append(kps_session[::label_every])
    keypoints = np.concatenate(kps)
    csv_paths = []
    for v, view in enumerate(views):
        path = str(root / f"CollectedData_{view}.csv")
        _write_dlc_csv(path, rel[v], keypoints[:, v, None], ("animal0",))
        csv_paths.append(path)
    return MultiViewPoseDataset(root=str(root), view_names=views, csv_paths=tuple(csv_paths),
                                video_paths=tuple(tuple(p) for p in videos), image_relpaths=tuple(map(tuple, rel)),
                                keypoints=keypoints, view_transforms=np.stack(transforms), image_size=(h, w))
