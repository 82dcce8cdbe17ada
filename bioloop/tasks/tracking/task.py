"""The tracking task for the shared engine: tracked videos -> global tracking transformer -> track ids.

Data: ``dataset.train_dataset`` / ``val_dataset`` (SLEAP .slp + videos, CTC folders, MOT txt,
TrackMate CSV; file lists or a ``dir``) become clips (``make_clips``) of instance crops
(``TrackingClips``). A training step encodes every crop of the batch once, then runs the
transformer per clip with every instance as a query; the association loss is averaged over clips.
Validation adds the loss and tracks each clip with the ``Tracker`` (the model as score function),
scored with motmetrics against the ground-truth ids (``runner.metrics.val``).
Prediction and scoring live in ``predict.py`` and ``evaluate.py``; ``view_batch.py`` renders crops.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioloop.errors import ConfigError
from bioloop.tasks.base import Task, config_where as _where, infer_mode
from bioloop.tasks.tracking.config import TrackingConfig
from bioloop.tasks.tracking.types import Instances, TrackSequence

_MIN_METRICS = {"loss", "num_switches", "num_false_positives", "num_misses", "num_fragmentations",
                "num_transfer", "num_ascend", "num_migrate", "mostly_lost", "motp", "idfp", "idfn"}


def detect_format(labels: str) -> str:
    """'slp', 'ctc' (a folder), 'mot' (.txt) or 'trackmate' (.csv) from a labels path."""
    low = labels.lower()
    if low.endswith(".slp"):
        return "slp"
    if os.path.isdir(labels):
        return "ctc"
    if low.endswith(".txt"):
        return "mot"
    if low.endswith(".csv"):
        return "trackmate"
    return "unknown"


def read_labels_file(labels: str, video: str | None, fmt: str = "auto", *, where: str,
                     gt_list: str | None = None) -> list[TrackSequence]:
    """The sequences of one labels file (or CTC folder) with its frames (``video``: video/image folder;
    for CTC the raw ``tNNN.tif`` folder when it is not where the layout puts it). ``gt_list``: the CTC
    track table when it is not beside the masks."""
    from bioloop.tasks.tracking import io

    fmt = detect_format(labels) if fmt == "auto" else fmt
    if gt_list is not None and fmt != "ctc":
        raise ConfigError.at(where, "gt_list is the track table of Cell Tracking Challenge data", got=gt_list,
                             fix="remove gt_list, or point tracks at a CTC folder")
    if fmt == "slp":
        return io.read_slp(labels, video, where=where)
    if fmt == "ctc":
        return [io.read_ctc(labels, raw=video, track_file=gt_list, where=where)[0]]
    if fmt == "mot":
        return [io.read_mot(labels, video, where=where)]
    if fmt == "trackmate":
        return [io.read_trackmate(labels, video, where=where)]
    raise ConfigError.at(where, "cannot tell the label format from this path", got=labels,
                         fix="use a .slp file, a CTC folder, a MOT .txt or a TrackMate .csv, or set source_format")


def _anchor(path: str, base: Path) -> str:
    p = Path(os.path.expanduser(str(path)))
    return str(p if p.is_absolute() else (base / p).resolve())


def base_dir(cfg) -> Path:
    """Relative dataset paths start from the config file's folder (else the working directory)."""
    return Path(cfg.source.path).resolve().parent if cfg.source and getattr(cfg.source, "path", None) else Path.cwd()


def _anchor_video(path: str, base: Path) -> str:
    """A video path, folder or ``OLD=NEW`` remap (read_slp) with relative paths anchored at ``base``."""
    text = os.fspath(path)
    if "=" in text and not os.path.exists(_anchor(text, base)):
        old, new = text.split("=", 1)
        return f"{old}={_anchor(new, base)}"
    return _anchor(text, base)


def load_sequences(settings, where: str, base: Path, video: str | None = None) -> list[TrackSequence]:
    """Every sequence one DatasetSettings names (``dir`` or its file lists). ``video`` (``--video``)
    replaces every labels file's video: one file, a folder, or an ``OLD=NEW`` remap of .slp paths."""
    from bioloop.tasks.tracking.io import find_pairs

    pairs: list[tuple[str, str | None]] = []
    if settings.dir is not None:
        pairs += find_pairs(settings.dir.path, settings.dir.labels_suffix, settings.dir.vid_suffix,
                            where=f"{where}.dir")
    videos = list(settings.video_files) or [None] * len(settings.slp_files)
    pairs += [(_anchor(s, base), None if v is None else _anchor_video(v, base))
              for s, v in zip(settings.slp_files, videos)]
    frames = list(settings.videos) or [None] * len(settings.tracks)
    pairs += [(_anchor(t, base), None if v is None else _anchor(v, base)) for t, v in zip(settings.tracks, frames)]
    if not pairs:
        raise ConfigError.at(where, "names no data", fix="set slp_files (+ video_files), tracks (+ videos) or dir")
    if video is not None:
        pairs = [(labels, _anchor_video(video, Path.cwd())) for labels, _ in pairs]
    out = []
    for labels, frames_from in pairs:
        seqs = read_labels_file(labels, frames_from, settings.source_format, where=f"{where} ({labels})",
                                gt_list=settings.gt_list)
        check_training_labels(seqs, labels, where=f"{where} ({labels})", gt_list=settings.gt_list)
        out += seqs
    return out


def check_training_labels(seqs: list[TrackSequence], labels: str, *, where: str, gt_list: str | None = None) -> None:
    """Ground truth fit to learn from: a CTC folder passes ``check_ctc``; instances carry tracks.

    No instance with a track: an error naming the file and the count (the association loss would be
    exactly 0). Some without: one printed line saying how many the loss ignores (id -1 is never
    anyone's target, so such an instance teaches nothing; it still appears as a distractor)."""
    import sys

    from bioloop.errors import DataError

    for seq in seqs:
        if seq.read_labels is None:
            continue
        if gt_list is not None:
            print(f"{where}: the CTC masks are not checked against gt_list {gt_list} (check_ctc reads the "
                  f"man_track.txt beside the masks)", file=sys.stderr, flush=True)
            continue
        from bioloop.tasks.tracking.io import check_ctc

        problems = check_ctc(seq.source)
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise DataError.at(where, f"this Cell Tracking Challenge ground truth fails the consistency checks"
                               f"{more}", got=problems[:5], fix="make every mask label one segment listed in "
                               "man_track.txt with its frames (relabel a track that reappears after a gap)")
    ids = [f.track_ids for s in seqs for f in s.frames if len(f)]
    ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    missing = int((ids < 0).sum())
    if missing and missing == len(ids):
        raise DataError.at(labels, f"none of its {len(ids)} instances has a track, so there is nothing to learn "
                           "(the association loss would be exactly 0)", got=f"{missing} untracked",
                           fix="proofread the tracks in SLEAP (or track it with bioloop predict and correct that), "
                           "then train on the tracked file")
    if missing:
        print(f"{where}: {missing} of {len(ids)} instances have no track; the association loss ignores them "
              f"(they only appear as other instances)", file=sys.stderr, flush=True)


def crop_channels(sequences: list[TrackSequence]) -> int:
    """Channels of the frames (after 3D max projection)."""
    from bioloop.tasks.tracking.data import frame_to_hwc

    for seq in sequences:
        t = next((k for k, f in enumerate(seq.frames) if len(f)), None)
        if t is not None:
            return int(frame_to_hwc(seq.read_frame(t), seq.ndim).shape[2])
    return int(frame_to_hwc(sequences[0].read_frame(0), sequences[0].ndim).shape[2])


def check_in_chans(cfg, settings, sequences, where: str) -> None:
    """``gtr.encoder_cfg.in_chans`` must equal frame channels x anchors."""
    anchors = settings.anchors
    n_anchors = 1 if isinstance(anchors, str) else len(anchors)
    need = crop_channels(sequences) * n_anchors
    if cfg.gtr.encoder_cfg.in_chans != need:
        raise ConfigError.at(_where(cfg, "gtr.encoder_cfg.in_chans"),
                             f"the crops of {where} have {need} channels ({need // n_anchors} per frame x "
                             f"{n_anchors} anchor(s))", got=cfg.gtr.encoder_cfg.in_chans,
                             fix=f"set model/gtr encoder_cfg in_chans = {need}")


def inference_settings(cfg):
    """The dataset settings prediction crops with: test_dataset, else train_dataset."""
    settings = cfg.dataset.test_dataset or cfg.dataset.train_dataset
    if settings is None:
        raise ConfigError.at(_where(cfg, "dataset"), "prediction needs the crop settings of a test_dataset or "
                             "train_dataset", fix=cfg.TRAIN_DATASET_FIX)
    return settings


def gtr_kwargs(cfg) -> dict:
    g = cfg.gtr
    meta = {}
    for kind in ("pos", "temp"):
        emb = getattr(g.embedding_meta, kind)
        if emb is not None and emb.mode not in (None, "none", "None"):
            meta[kind] = {"mode": emb.mode, **emb.kwargs}
    enc = g.encoder_cfg
    encoder = {"model_name": enc.model_name, "backend": enc.backend, "in_chans": enc.in_chans,
               "pretrained": enc.pretrained, **enc.kwargs}
    return dict(encoder_cfg=encoder, d_model=g.d_model, nhead=g.nhead, num_encoder_layers=g.num_encoder_layers,
                num_decoder_layers=g.num_decoder_layers, dropout=g.dropout, activation=g.activation,
                return_intermediate_dec=g.return_intermediate_dec, norm=g.norm,
                num_layers_attn_head=g.num_layers_attn_head, dropout_attn_head=g.dropout_attn_head,
                embedding_meta=meta, return_embedding=g.return_embedding, decoder_self_attn=g.decoder_self_attn)


def build_tracker(cfg, persistent: bool):
    from math import inf

    from bioloop.tasks.tracking.tracker import Tracker

    t = cfg.tracker
    return Tracker(window_size=t.window_size, use_vis_feats=t.use_vis_feats, overlap_thresh=t.overlap_thresh,
                   mult_thresh=t.mult_thresh, decay_time=t.decay_time, iou=t.iou, max_center_dist=t.max_center_dist,
                   persistent_tracking=bool(persistent), max_gap=inf if t.max_gap is None else t.max_gap,
                   max_tracks=inf if t.max_tracks is None else t.max_tracks)


def model_score_fn(model, image_hw):
    """A Tracker score function running the transformer on the window (features cached by the tracker)."""
    from bioloop.tasks.tracking.data import normalise_boxes

    def score(window):
        feats = torch.cat([window.ref_feats, window.query_feats])
        boxes = np.concatenate([window.ref_boxes, window.query.boxes])
        times = np.r_[window.ref_frames, np.full(len(window.query), window.query_frame)]
        n_ref = window.n_ref
        device = feats.device
        out = model(None, torch.from_numpy(normalise_boxes(boxes, image_hw)).to(device),
                    torch.from_numpy(times.astype(np.int64)).to(device),
                    torch.arange(n_ref, n_ref + len(window.query), device=device), ref_features=feats)
        return out["logits"][-1][:, :n_ref]

    return score


def clip_instances(clip: dict) -> list[Instances]:
    """The GT instances of one clip (pixel boxes, centroids as points), one per frame with instances."""
    frames = clip["frames"].cpu().numpy()
    H, W = clip["image_hw"]
    boxes = clip["boxes"].float().cpu().numpy().astype(np.float64) * [W, H, W, H] - 0.5
    cents = clip["centroids"].float().cpu().numpy().astype(np.float64)
    ids = clip["ids"].cpu().numpy()
    out = []
    for t in np.unique(frames):
        sel = frames == t
        out.append(Instances(int(t), cents[sel][:, None], boxes[sel], ids[sel]))
    return out


class TrackingTask(Task):
    name = "tracking"
    Config = TrackingConfig
    default_key_metric = "loss"
    # the transformer leaves parameters without gradients in some configurations (the first decoder
    # layer's norm1 when decoder_self_attn is off), which DDP must be told about
    find_unused_parameters = True

    def __init__(self):
        self._val_state: tuple | None = None  # (sequence index, Tracker) for persistent validation tracking

    def metric_mode(self, metric: str) -> str:
        return "min" if metric in _MIN_METRICS else infer_mode(metric)

    # ------------------------------------------------------------ model, loss, data
    def build_model(self, cfg) -> torch.nn.Module:
        if cfg.model is not None:
            return cfg.model
        from bioloop.tasks.tracking.model import GlobalTrackingTransformer

        return GlobalTrackingTransformer(**gtr_kwargs(cfg))

    def build_loss(self, cfg):
        from bioloop.tasks.tracking.loss import AssociationLoss

        return AssociationLoss(cfg.loss.neg_unmatched, cfg.loss.epsilon, cfg.loss.asso_weight)

    def _dataset(self, cfg, split: str, train: bool, video: str | None = None):
        from bioloop.tasks.tracking.data import TrackingClips, make_clips

        settings = getattr(cfg.dataset, f"{split}_dataset")
        if settings is None and split == "train":
            raise ConfigError.at(_where(cfg, "dataset"), "needs a train_dataset", fix=cfg.TRAIN_DATASET_FIX)
        if settings is None:
            return None
        where = _where(cfg, f"dataset.{split}_dataset")
        seqs = load_sequences(settings, where, base_dir(cfg), video)
        check_in_chans(cfg, settings, seqs, where)
        seed = cfg.random_seed if settings.seed is None else settings.seed
        clips = make_clips(seqs, settings.clip_length, settings.chunk, settings.n_chunks, seed)
        if not clips:
            raise ConfigError.at(where, "has no clip of >= 2 frames", got=[len(s) for s in seqs],
                                 fix="use longer videos or a smaller clip_length")
        return TrackingClips(seqs, clips, settings, train=train, where=where)

    def build_datasets(self, cfg):
        return self._dataset(cfg, "train", True), self._dataset(cfg, "val", False)

    @staticmethod
    def collate(items):
        from bioloop.tasks.tracking.data import collate

        return collate(items)

    def before_training(self, cfg, train_set, logger, say) -> bool:
        """``view_batch.enable``: render a clip before the first epoch; ``no_train`` stops there."""
        if not cfg.view_batch.enable:
            return True
        from bioloop.tasks.tracking.view_batch import write_view_batch

        if logger is None or logger.enabled:
            path = write_view_batch(cfg, train_set, logger)
            say(f"view_batch: crops with their track ids written to {path}")
        if cfg.view_batch.no_train:
            say("view_batch.no_train is set: stopping before training")
            return False
        return True

    # ------------------------------------------------------------ steps
    @staticmethod
    def _core(model):
        return getattr(model, "module", model)

    def _clip_losses(self, model, batch, loss_fn) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Per-clip losses and the features of every crop (None when the whole batch was one forward)."""
        from bioloop.tasks.tracking.data import split_batch

        counts = batch["counts"].tolist()
        clips = [c for c, n in zip(split_batch(batch), counts) if n > 0]
        if len(clips) == 1:
            c = clips[0]
            q = torch.arange(len(c["ids"]), device=c["ids"].device)
            out = model(c["crops"], c["boxes"], c["times"], q)
            return [loss_fn(out["logits"], c["ids"], c["times"], q)], None
        # several clips: one encoder pass, one transformer pass per clip (DDP wraps the whole step,
        # so any number of calls is fine under torch.distributed)
        core = self._core(model)
        feats = core.encode_crops(batch["crops"])
        bounds = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        losses = []
        for b, n in enumerate(counts):
            if n == 0:
                continue
            sl = slice(bounds[b], bounds[b + 1])
            q = torch.arange(n, device=feats.device)
            out = core(None, batch["boxes"][sl], batch["times"][sl], q, ref_features=feats[sl])
            losses.append(loss_fn(out["logits"], batch["ids"][sl], batch["times"][sl], q))
        return losses, feats

    def training_step(self, model, batch, loss_fn, cfg) -> dict[str, torch.Tensor]:
        losses, _ = self._clip_losses(model, batch, loss_fn)
        if not losses:
            return {"loss": sum(p.sum() * 0.0 for p in self._core(model).parameters())}
        out = {"loss": torch.stack(losses).mean()}
        if cfg.runner.metrics.train:  # logged as train/<metric>, averaged over the logging window
            out.update(self._train_metrics(model, batch, cfg))
        return out

    def _train_metrics(self, model, batch, cfg) -> dict[str, torch.Tensor]:
        """``runner.metrics.train`` on this batch's clips: each clip tracked on its own (no gradients)."""
        from bioloop.tasks.tracking.metrics import mot_metrics

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                clips = self._tracked_clips(model, batch, lambda sequence: build_tracker(cfg, False))
        finally:
            model.train(was_training)
        if not clips:
            return {}
        gts, preds = merge_clips(clips, persistent=False)
        scores = mot_metrics(gts, preds, list(cfg.runner.metrics.train), match="iou", threshold=0.5,
                             where=_where(cfg, "runner.metrics.train"))
        return {k: torch.tensor(float(v)) for k, v in scores.items() if np.isscalar(v)}

    def _tracked_clips(self, model, batch, tracker_for) -> list[dict]:
        """Per clip with instances: its GT frames and the same frames with the tracker's ids."""
        from bioloop.tasks.tracking.data import split_batch

        clips = []
        for clip in split_batch(batch):
            if len(clip["ids"]):
                gt = clip_instances(clip)
                ids = self.track_clip(model, clip, tracker_for(clip["sequence"]))
                pred = [Instances(g.frame, g.points, g.boxes, k) for g, k in zip(gt, ids)]
                clips.append({"sequence": clip["sequence"], "start": clip["start"], "gt": gt, "pred": pred})
        return clips

    def track_clip(self, model, clip: dict, tracker) -> list[np.ndarray]:
        """Predicted ids of one clip's instances, per frame (frames with instances, in order)."""
        core = self._core(model)
        feats = core.encode_crops(clip["crops"])
        frames = clip["frames"].cpu().numpy()
        insts = clip_instances(clip)
        items = [(inst, feats[torch.from_numpy(np.flatnonzero(frames == inst.frame)).to(feats.device)])
                 for inst in insts]
        return tracker.track(items, model_score_fn(core, clip["image_hw"]))

    def _tracker_for(self, cfg, sequence: int):
        persistent = bool(cfg.runner.persistent_tracking.val)
        if not persistent:
            return build_tracker(cfg, False)
        if self._val_state is None or self._val_state[0] != sequence:
            self._val_state = (sequence, build_tracker(cfg, True))  # frames not after the last ones reset it
        return self._val_state[1]

    def validation_step(self, model, batch, loss_fn, cfg) -> dict[str, Any]:
        losses, _ = self._clip_losses(model, batch, loss_fn)
        clips = self._tracked_clips(model, batch, lambda sequence: self._tracker_for(cfg, sequence))
        return {"loss": float(sum(float(x) for x in losses)), "n": len(losses), "clips": clips}

    def reduce_validation(self, parts, cfg) -> dict[str, float]:
        from bioloop.tasks.tracking.metrics import mot_metrics

        n = sum(p["n"] for p in parts)
        out = {"loss": sum(p["loss"] for p in parts) / max(n, 1)}
        names = [m for m in (cfg.runner.metrics.val or []) if m != "loss"]
        clips = sorted((c for p in parts for c in p["clips"]), key=lambda c: (c["sequence"], c["start"]))
        if names and clips:
            gt, pred = merge_clips(clips, persistent=bool(cfg.runner.persistent_tracking.val))
            scores = mot_metrics(gt, pred, names, match="iou", threshold=0.5,
                                 where=_where(cfg, "runner.metrics.val"))
            out.update({k: float(v) for k, v in scores.items() if np.isscalar(v)})
        return out

    def figures(self, model, batch, cfg) -> dict[str, Any]:
        from bioloop.tasks.tracking.data import split_batch
        from bioloop.tasks.tracking.view_batch import render_clip

        clip = split_batch(batch)[0]
        if not len(clip["ids"]):
            return {}
        ids = self.track_clip(model, clip, build_tracker(cfg, False))
        return {"tracks": render_clip(clip, cfg.view_batch.num_frames, pred_ids=np.concatenate(ids))}

    def check_config(self, cfg) -> list[str]:
        """Every dataset file exists and the transformer with its encoder builds (meta device, no weights)."""
        import attrs

        from bioloop.tasks._probe import build_on_meta, missing_files

        where = cfg.source.name if cfg.source else "config"
        problems, base = [], base_dir(cfg)
        for split in ("train", "val", "test"):
            ds = getattr(cfg.dataset, f"{split}_dataset")
            if ds is None:
                continue
            for key in ("slp_files", "video_files", "videos", "tracks"):
                paths = [_anchor(p, base) for p in getattr(ds, key) if p and "://" not in str(p)]
                problems += missing_files(where, f"dataset.{split}_dataset.{key}", paths)
            if ds.dir is not None:
                problems += missing_files(where, f"dataset.{split}_dataset.dir.path", [ds.dir.path], folder=True)
        encoder = cfg.gtr.encoder_cfg
        probe = cfg
        if isinstance(encoder.pretrained, str):
            problems += missing_files(where, "gtr.encoder_cfg.pretrained", [encoder.pretrained])
            probe = attrs.evolve(cfg, gtr=attrs.evolve(cfg.gtr, encoder_cfg=attrs.evolve(encoder, pretrained=False)))
        return problems + build_on_meta(self, probe)

    def checkpoint_extras(self, cfg) -> dict[str, Any]:
        s = inference_settings(cfg)
        return {"crop_size": s.crop_size, "padding": s.padding, "anchors": s.anchors,
                "in_chans": cfg.gtr.encoder_cfg.in_chans}

    # ------------------------------------------------------------ predict / evaluate / view
    def predict(self, cfg, model, *, extras, **options):
        from bioloop.tasks.tracking.predict import predict_tracking

        return predict_tracking(cfg, model, extras=extras, **options)

    def evaluate(self, cfg, *, prediction, truth=None, report=None, **options) -> dict[str, Any]:
        from bioloop.tasks.tracking.evaluate import evaluate_tracking

        return evaluate_tracking(cfg, prediction=prediction, truth=truth, report=report, **options)

    def view_batch(self, cfg, video: str | None = None) -> Path:
        """``bioloop view-batch``: the first training clip's crops with their ids, to PNG and TensorBoard.
        ``video`` (``--video``): the training videos' file, folder or ``OLD=NEW`` remap."""
        from bioloop.engine.logging import RunLogger
        from bioloop.tasks.tracking.view_batch import write_view_batch

        train = self._dataset(cfg, "train", True, video)
        with RunLogger(cfg.run_dir, tensorboard=cfg.logger.tensorboard, run_name=cfg.model_name,
                       where=cfg.source.name if cfg.source else "") as logger:
            return write_view_batch(cfg, train, logger)


def merge_clips(clips: list[dict], persistent: bool) -> tuple[list[Instances], list[Instances]]:
    """One GT and one predicted frame list for motmetrics: each clip (or, with persistent tracking,
    each sequence) gets its own frame range and id namespace, so clips never match each other."""
    gt_all, pred_all = [], []
    offset, space, last = 0, -1, None
    for c in clips:
        key = c["sequence"] if persistent else (c["sequence"], c["start"])
        if key != last:
            space, last = space + 1, key
            offset = (max((f.frame for f in gt_all), default=-1) + 1) - min(f.frame for f in c["gt"])
        shift = space * 1_000_000
        for g, p in zip(c["gt"], c["pred"]):
            gt_all.append(Instances(g.frame + offset, g.points, g.boxes, g.track_ids + shift))
            pred_all.append(Instances(p.frame + offset, p.points, p.boxes,
                                      np.where(p.track_ids >= 0, p.track_ids + shift, -1)))
    return gt_all, pred_all


TASK = TrackingTask()
