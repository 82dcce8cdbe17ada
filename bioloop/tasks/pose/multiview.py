"""Multi-camera pose projects (Lightning Pose ``data.view_names`` with one labels CSV per view).

A project with views V (``view_names``) lists one labels file per view (``labels_file`` /
``data.csv_file`` a list, in the views' order). Row i of every file is the same moment seen by each
camera: the image names must agree (``labeled-data/session0_top/img0039.png`` and
``labeled-data/session0_side/img0039.png``), and every view labels the same K keypoints.

Inside the pose task the views are one sample: images (V, 3, H, W), keypoints (V*K, 2) view-major
(view v's keypoint k is column v*K + k, named ``<view>/<keypoint>``). The model runs one shared
backbone + head over each view's image (``MultiViewModel``), so the heatmaps are (B, V*K, h, w) and
every single-view piece (heatmap targets, losses, decoding, confidences) applies unchanged.
``pca_multiview`` uses the columns of each view as its ``mirrored_column_matches`` (a body part seen
by V cameras is V 2D points of one 3D point: a 3-dimensional subspace of the 2V coordinates).

Unlabeled videos are named ``<session>_<view>.mp4`` (Lightning Pose's convention); a session must
have a video for every view, all with the same number of frames. Prediction writes one CSV per view
(and, for videos, one overlay mp4 per view).
"""

from __future__ import annotations

import sys
from pathlib import Path

import attrs
import numpy as np
import torch
from torch import nn

from bioloop.errors import ConfigError, DataError


def view_labels_paths(cfg) -> list[Path]:
    """The labels file of each view (``labels_file`` a list, relative to ``data_dir``)."""
    files = cfg.labels_file if isinstance(cfg.labels_file, (list, tuple)) else [cfg.labels_file]
    return [Path(f) if Path(f).is_absolute() else Path(cfg.data_dir) / f for f in files]


def read_views(cfg, where: str) -> list:
    """One PoseLabels per view, each checked against ``keypoint_names`` / ``num_keypoints`` (per view, as
    Lightning Pose counts them) and against the first view: same frames (image names), same keypoints."""
    from bioloop.tasks.pose.labels import check_keypoints, read_labels

    views = list(cfg.view_names)
    paths = view_labels_paths(cfg)
    if len(paths) != len(views):
        raise ConfigError.at(f"{where}: labels_file", f"one labels file per view is needed ({len(views)} views: "
                             f"{', '.join(views)})", got=[str(p) for p in paths],
                             fix="list the views' CSVs in labels_file (data.csv_file) in the order of view_names")
    out = []
    for view, path in zip(views, paths):
        labels = check_keypoints(read_labels(path), cfg.keypoint_names, cfg.num_keypoints,
                                 where=f"{where} (view {view})")
        if labels.is_multi_animal:
            raise DataError.at(str(path), "multi-view projects are single-animal here",
                               got=f"{labels.num_animals} animals", fix="label one animal per view")
        out.append(labels)
    first = out[0]
    for view, path, labels in zip(views[1:], paths[1:], out[1:]):
        if labels.keypoint_names != first.keypoint_names:
            raise DataError.at(str(path), f"view {view} labels other keypoints than view {views[0]} "
                               f"({', '.join(first.keypoint_names)})", got=labels.keypoint_names,
                               fix="label the same keypoints, in the same order, in every view")
        if labels.num_frames != first.num_frames:
            raise DataError.at(str(path), f"view {view} has {labels.num_frames} labeled frames, view "
                               f"{views[0]} has {first.num_frames}", got=labels.num_frames,
                               fix="every view's CSV lists the same frames in the same order")
        for row, (a, b) in enumerate(zip(first.image_paths, labels.image_paths)):
            if Path(a).name != Path(b).name:
                raise DataError.at(str(path), f"row {row} is image {Path(b).name} but view {views[0]}'s row "
                                   f"{row} is {Path(a).name}", got=b,
                                   fix="every view's CSV lists the same frames (same image names) in the same order")
    return out


def combine_views(views, view_names) -> "object":
    """The views as one PoseLabels with V*K keypoints ``<view>/<keypoint>`` (view-major) and the first
    view's image paths (they group the frames by session for the split)."""
    first = views[0]
    names = [f"{v}/{k}" for v in view_names for k in first.keypoint_names]
    keypoints = np.concatenate([lab.keypoints for lab in views], axis=2)
    return attrs.evolve(first, keypoints=keypoints, keypoint_names=names, visible=None, likelihood=None,
                        source=first.source)


def column_matches(num_views: int, num_keypoints: int) -> list[list[int]]:
    """``mirrored_column_matches`` of the combined keypoints: view v's columns v*K .. v*K + K - 1."""
    return [list(range(v * num_keypoints, (v + 1) * num_keypoints)) for v in range(num_views)]


class MultiViewFrames(torch.utils.data.Dataset):
    """Labeled moments of a multi-view project: ``{"image": (V, 3, H, W), "keypoints": (V*K, 2) in
    resized pixels, "orig_hw": (V, 2), "index"}``; each view is a ``PoseFrames`` over the same rows,
    augmented with the same draw (``ds[(i, seed)]``)."""

    def __init__(self, views, indices, *, image_resize_dims, augmentation=None):
        from bioloop.tasks.pose.data import PoseFrames

        self.views = [PoseFrames(lab, indices, image_resize_dims=image_resize_dims, augmentation=augmentation)
                      for lab in views]

    def __len__(self) -> int:
        return len(self.views[0])

    def __getitem__(self, key) -> dict:
        items = [view[key] for view in self.views]
        return {"image": torch.stack([it["image"] for it in items]),
                "keypoints": torch.cat([it["keypoints"] for it in items]),
                "orig_hw": torch.stack([it["orig_hw"] for it in items]),
                "index": items[0]["index"]}


class MultiViewModel(nn.Module):
    """One single-view pose model run over every view: ``forward(images (B, V, 3, H, W))`` -> the base
    model's outputs with the views' keypoint channels side by side (heatmaps (B, V*K, h, w), offsets
    (B, V*2K, h, w), regression keypoints (B, V*K, 2)). The backbone and head are shared by the views."""

    def __init__(self, base: nn.Module, num_views: int):
        super().__init__()
        self.base, self.num_views = base, int(num_views)
        self.backbone = getattr(base, "backbone", None)

    @property
    def stride(self) -> int:
        return self.base.stride

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.ndim != 5 or images.shape[1] != self.num_views:
            raise DataError.at("MultiViewModel", f"expected images (batch, {self.num_views} views, channels, "
                               "height, width)", got=tuple(images.shape),
                               fix="feed one image per view (MultiViewFrames)")
        b, v = images.shape[:2]
        out = self.base(images.flatten(0, 1))
        return {k: t.reshape(b, v * t.shape[1], *t.shape[2:]) for k, t in out.items()}


# ---------------------------------------------------------------- unlabeled videos
def session_videos(video_dir, view_names, where: str) -> list[list[Path]]:
    """Per view, the session videos ``<session>_<view>.<ext>`` of ``video_dir`` in session order; every
    session has one video per view (a file naming no view, or a session missing a view, is an error)."""
    from bioloop.tasks.pose.semi import VIDEO_SUFFIXES

    folder = Path(video_dir)
    if not folder.is_dir():
        raise DataError.at(where, "video_dir is not a folder", got=str(folder),
                           fix="point video_dir at a folder of <session>_<view>.mp4 videos")
    sessions: dict[str, dict[str, Path]] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
        view = next((v for v in view_names if path.stem.endswith(f"_{v}")), None)
        if view is None:
            raise DataError.at(str(path), f"the video's name ends in none of the views {list(view_names)}",
                               got=path.name, fix="name multi-view videos <session>_<view>.mp4")
        sessions.setdefault(path.stem[:-len(view) - 1], {})[view] = path
    if not sessions:
        raise DataError.at(where, "no videos in video_dir", got=str(folder), fix="put <session>_<view>.mp4 files there")
    for session, found in sessions.items():
        absent = [v for v in view_names if v not in found]
        if absent:
            raise DataError.at(str(folder), f"session {session} has no video of view(s) {absent}",
                               got=sorted(p.name for p in found.values()),
                               fix="give every session one video per view")
    return [[sessions[s][v] for s in sorted(sessions)] for v in view_names]


class MultiViewClips(torch.utils.data.Dataset):
    """Unlabeled clips seen by every view: ``ds[(i, seed)]["images"]`` is (T, V, 3, H, W) in [0, 1], the
    same session and frames in each view (one ``UnlabeledFrames`` per view draws the same clip from the
    same seed, since the views' videos have equal lengths)."""

    def __init__(self, videos_per_view, sequence_length: int, resize_hw):
        from bioloop.tasks.pose.video import UnlabeledFrames

        self.views = [UnlabeledFrames(paths, sequence_length, resize_hw=resize_hw) for paths in videos_per_view]
        first = self.views[0]
        for view in self.views[1:]:
            for a, b, n, m in zip(first.video_paths, view.video_paths, first.n_frames, view.n_frames):
                if n != m:
                    raise DataError.at(b, f"this view's video has {m} frames, {Path(a).name} has {n}",
                                       got=m, fix="give the views of a session videos of the same length")

    def __len__(self) -> int:
        return len(self.views[0])

    def __getitem__(self, key) -> dict:
        items = [view[key] for view in self.views]
        return {"images": torch.stack([it["images"] for it in items], dim=1),
                "frame_indices": items[0]["frame_indices"], "video": items[0]["video"]}


# ---------------------------------------------------------------- prediction
def predict_views(cfg, model, task, *, extras, input, output, batch_size=None, overwrite=False,
                  show_progress=True, written: list | None = None, save_video=None) -> Path:
    """Predict one session seen by every view into one CSV per view.

    ``input`` is one view's video (``<session>_<view>.mp4``; the other views' videos are found next to it
    by their view names) or one view's labels CSV (its labeled images and the other views' CSVs as
    configured). ``output`` ``preds.csv`` gives ``preds_<view>.csv`` per view; returns the first one.
    ``save_video`` (default ``eval.save_vids_after_training``) also draws each view's keypoints on its
    video (``preds_<view>.labeled.mp4``; videos only). Every file written is appended to ``written``.
    """
    from bioloop.engine.progress import progress_enabled, tqdm
    from bioloop.tasks.pose.data import normalize_frames, resize_image, unresize_keypoints
    from bioloop.tasks.pose.labels import write_dlc_csv

    views = list(extras.get("view_names") or cfg.view_names)
    names = list(extras.get("view_keypoint_names") or cfg.keypoint_names or [])
    dims = tuple(extras.get("image_resize_dims") or (cfg.image_resize_dims.height, cfg.image_resize_dims.width))
    source, out = Path(input), Path(output)
    outputs = [out.with_name(f"{out.stem}_{v}{out.suffix or '.csv'}") for v in views]
    for path in outputs:
        if path.exists() and not overwrite:
            raise DataError.at(str(path), "output already exists", fix="choose another --output or pass --overwrite")
    frames_of_view, rows, videos = _view_sources(cfg, source, views)
    batch_size = batch_size or cfg.dali.base_predict_sequence_length
    device = next(model.parameters()).device
    model.eval()
    total = len(rows[0])
    conf_all, kp_all = [], []
    bar = tqdm(total=total, desc="predict views", unit="frame", disable=not progress_enabled(not show_progress))
    iterators = [iter(f) for f in frames_of_view]
    done = 0
    with torch.inference_mode():
        while done < total:
            n = min(batch_size, total - done)
            raw = [[next(it) for _ in range(n)] for it in iterators]  # per view, n frames
            sizes = [[f.shape[:2] for f in frames] for frames in raw]
            x = np.stack([normalize_frames(np.stack([resize_image(f, dims) for f in frames])) for frames in raw], 1)
            xy, c = task.decode(model, model(torch.from_numpy(x).to(device)))
            xy = xy.float().cpu().numpy().reshape(n, len(views), -1, 2)
            for i in range(n):
                for v in range(len(views)):
                    xy[i, v] = unresize_keypoints(xy[i, v], sizes[v][i], dims)
            kp_all.append(xy)
            conf_all.append(c.float().cpu().numpy().reshape(n, len(views), -1))
            done += n
            bar.update(n)
    bar.close()
    kp, conf = np.concatenate(kp_all), np.concatenate(conf_all)
    if not names:
        names = [f"kp{i}" for i in range(kp.shape[2])]
    files = []
    for v, path in enumerate(outputs):
        index = {"image_paths": rows[v]} if isinstance(rows[v][0], str) else {"frame_indices": np.asarray(rows[v])}
        write_dlc_csv(path, kp[:, v], likelihood=conf[:, v], keypoint_names=names,
                      root=getattr(cfg, "data_dir", None), **index)
        files.append(path)
    want_video = cfg.eval.save_vids_after_training if save_video is None else save_video
    if want_video and videos:
        from bioloop.tasks.pose.overlay import write_overlay_video

        for v, path in enumerate(outputs):
            files.append(write_overlay_video(videos[v], kp[:, v], conf[:, v], path.with_suffix(".labeled.mp4"),
                                             colormap=cfg.eval.colormap,
                                             confidence_thresh=cfg.eval.confidence_thresh_for_vid,
                                             show_progress=show_progress, names=names))
    elif want_video and save_video:
        print(f"predict: no overlay video for {source}: overlays are drawn on videos, not labeled images",
              file=sys.stderr)
    if written is not None:
        written.extend(files)
    return outputs[0]


def _view_sources(cfg, source: Path, views) -> tuple[list, list, list | None]:
    """Per view an iterator of RGB frames, the rows' index (image paths or frame numbers) and the video
    (None for labeled images)."""
    from bioloop.tasks.pose.semi import VIDEO_SUFFIXES

    if source.suffix.lower() == ".csv":
        paths = view_labels_paths(cfg)
        if source.resolve() not in [p.resolve() for p in paths]:
            raise DataError.at(str(source), "a multi-view prediction from labeled images takes one of the "
                               "configured views' CSVs", got=str(source),
                               fix=f"pass one of {', '.join(map(str, paths))}, or a video")
        labels = read_views(cfg, "predict")
        from bioloop.tasks.pose.data import FrameReader

        reader = FrameReader()
        return ([(reader.read(p) for p in lab.image_paths) for lab in labels],
                [list(lab.image_paths) for lab in labels], None)
    if source.suffix.lower() not in VIDEO_SUFFIXES or not source.is_file():
        raise DataError.at(str(source), "expected one view's video (<session>_<view>.mp4) or labels CSV",
                           fix=f"videos: {', '.join(VIDEO_SUFFIXES)}")
    view = next((v for v in views if source.stem.endswith(f"_{v}")), None)
    if view is None:
        raise DataError.at(str(source), f"the video's name ends in none of the views {views}", got=source.name,
                           fix="name multi-view videos <session>_<view>.mp4")
    session = source.stem[:-len(view) - 1]
    videos = [source.with_name(f"{session}_{v}{source.suffix}") for v in views]
    absent = [str(p) for p in videos if not p.is_file()]
    if absent:
        raise DataError.at(str(source), "the session's other views have no video next to it", got=absent,
                           fix="put every view's <session>_<view> video in the same folder")
    from bioloop.tasks.pose.video import VideoReader

    counts = []
    for path in videos:
        with VideoReader(path) as reader:
            counts.append(len(reader))
    if len(set(counts)) != 1:
        raise DataError.at(str(source), "the views' videos have different frame counts",
                           got=dict(zip(map(str, videos), counts)), fix="give every view the same frames")

    def frames(path):
        with VideoReader(path) as reader:
            for start in range(0, counts[0], 64):
                yield from reader.read(start, min(64, counts[0] - start))

    return [frames(p) for p in videos], [list(range(counts[0]))] * len(views), videos


def view_slices(view_names, num_keypoints: int) -> dict[str, slice]:
    return {v: slice(i * num_keypoints, (i + 1) * num_keypoints) for i, v in enumerate(view_names)}


def per_view_scores(pred, true, view_names, summarize_kwargs) -> dict[str, float]:
    """``pixel_error/<view>`` and ``rmse/<view>``: each view's keypoints pooled (frame pixels)."""
    from bioloop.tasks.pose.metrics import summarize

    k = pred.shape[1] // len(view_names)
    out = {}
    for view, sl in view_slices(view_names, k).items():
        s = summarize(pred[:, sl], true[:, sl], [f"k{i}" for i in range(k)], **summarize_kwargs)
        out[f"pixel_error/{view}"] = s["pixel_error/mean"]
        out[f"rmse/{view}"] = s["rmse/mean"]
    return out


def evaluate_views(cfg, *, prediction, truth=None, report=None, split=None) -> dict:
    """Score a multi-view prediction: ``prediction`` is the first view's CSV (``preds_<view>.csv``, the
    others found by their view names) or a list of one CSV per view; each view is scored against its
    labels file with ``evaluate_pose``; ``scores`` holds ``<view>/<score>`` for every view."""
    from bioloop.tasks.pose.evaluate import evaluate_pose, write_report

    views = list(cfg.view_names)
    if isinstance(prediction, (list, tuple)):
        preds = [Path(p) for p in prediction]
    else:
        first = Path(prediction)
        stem = first.stem[:-len(views[0]) - 1] if first.stem.endswith(f"_{views[0]}") else None
        if stem is None:
            raise DataError.at(str(first), f"a multi-view prediction is named <name>_<view>.csv, starting with "
                               f"the first view {views[0]!r}", got=first.name,
                               fix=f"pass the {views[0]} CSV that predict wrote")
        preds = [first.with_name(f"{stem}_{v}{first.suffix}") for v in views]
    if truth is not None and not isinstance(truth, (list, tuple)):
        raise ConfigError.at("evaluate --truth", "a multi-view project scores every view, so it needs one labels "
                             "file per view", got=str(truth),
                             fix="drop --truth (each view's configured labels file is used) or give one per view")
    truths = [Path(t) for t in truth] if truth is not None else view_labels_paths(cfg)
    if len(preds) != len(views) or len(truths) != len(views):
        raise ConfigError.at("evaluate", f"one prediction and one labels file per view ({', '.join(views)})",
                             got=[str(p) for p in preds], fix="pass one CSV per view")
    rows = None
    if split not in (None, "all"):  # the run's split.csv names the first view's images
        from bioloop.tasks.pose.evaluate import split_frames_of_run
        from bioloop.tasks.pose.labels import read_labels

        rows = split_frames_of_run(cfg, truths[0], read_labels(truths[0]), split)
    scores, tables, frames = {}, [], 0
    for view, pred, true in zip(views, preds, truths):
        result = evaluate_pose(cfg, prediction=str(pred), truth=str(true), split=split, rows=rows)
        scores.update({f"{view}/{k}": v for k, v in result["scores"].items()})
        tables.append(f"view {view}:\n{result['table']}")
        frames = result["frames"]
    result = {"frames": frames, "scores": scores, "table": "\n".join(tables),
              "prediction": [str(p) for p in preds], "truth": [str(t) for t in truths], "split": split or "all"}
    if report:
        write_report(report, result)
    return result


def check_views_config(cfg) -> list[str]:
    """What a multi-view config gets wrong, as ``check`` lines."""
    problems = []
    views = list(cfg.view_names)
    if len(views) < 2:
        problems.append(f"view_names: a multi-view project has at least 2 views (got {views}); drop view_names "
                        "for one camera")
    files = cfg.labels_file if isinstance(cfg.labels_file, (list, tuple)) else [cfg.labels_file]
    if len(files) != len(views):
        problems.append(f"labels_file: one labels file per view is needed ({len(views)} views, got "
                        f"{len(files)} files); list them in the order of view_names")
    if cfg.model_type == "heatmap_mhcrnn":
        problems.append("model_type: heatmap_mhcrnn (context frames) is not available with view_names; use heatmap")
    if cfg.method == "td":
        problems.append("method: top-down ('td') is not available with view_names; use 'bu'")
    if cfg.mirrored_column_matches:
        problems.append("mirrored_column_matches: multi-view projects match the views' columns themselves; "
                        "drop mirrored_column_matches")
    if "pca_singleview" in cfg.losses_to_use:
        problems.append("losses_to_use: pca_singleview is not available with view_names (whether its columns "
                        "count per view or across views is not settled); use pca_multiview and/or temporal")
    if cfg.pose_model is not None:
        problems.append("pose_model: multi-view projects build their model from model_type and backbone; "
                        "drop pose_model")
    return problems

