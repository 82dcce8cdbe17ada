"""The pose task for the shared engine: labeled frames -> heatmap (or regression) model -> keypoints.

Supervised heatmap, regression and temporal-context (heatmap_mhcrnn) models with DLC location
refinement; unsupervised losses on unlabeled video clips (``semi.py``); grouped splits written
to the run folder; augmentation; a frozen-then-unfrozen backbone with its own learning rate;
metrics in frame pixels shared with ``bioloop evaluate``; prediction on image folders and videos
to DLC-style CSV (+ .slp, overlay mp4). ``method = "td"`` (top-down: detector + crops) is wired
through ``td_task.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioloop.errors import ConfigError
from bioloop.tasks.base import Task, config_where as _where
from bioloop.tasks.pose.config import PoseConfig



def labels_path(cfg) -> Path:
    """The labels file; of a multi-view project (``view_names``) the first view's (the one ``split.csv`` names)."""
    from bioloop.tasks.pose.multiview import view_labels_paths

    return view_labels_paths(cfg)[0]


def load_labels(cfg):
    """The labels file, checked against keypoint_names / num_keypoints and put in their order. A multi-view
    project's views as one set of labels with ``<view>/<keypoint>`` columns (``multiview.combine_views``)."""
    from bioloop.tasks.pose.labels import check_keypoints, read_labels

    if cfg.view_names:
        from bioloop.tasks.pose.multiview import combine_views

        return combine_views(load_views(cfg), cfg.view_names)
    labels = read_labels(labels_path(cfg))
    return check_keypoints(labels, cfg.keypoint_names, cfg.num_keypoints,
                           where=cfg.source.name if cfg.source else "config")


def load_views(cfg) -> list:
    """A multi-view project's labels, one PoseLabels per view (``multiview.read_views``)."""
    from bioloop.tasks.pose.multiview import read_views

    return read_views(cfg, cfg.source.name if cfg.source else "config")


def _heatmap_kind(core) -> tuple[bool, float]:
    """(the maps are logits (kl/js), the target sigma in heatmap pixels) of a built pose model."""
    return bool(getattr(core, "heatmap_logits", False)), float(getattr(core, "heatmap_sigma", 1.25))


class PoseTask(Task):
    name = "pose"
    Config = PoseConfig
    default_key_metric = "pixel_error/mean"

    # ------------------------------------------------------------ model and loss
    def _num_keypoints(self, cfg) -> int:
        """Keypoints the model predicts per image (per view in a multi-view project)."""
        if cfg.view_names and not (cfg.keypoint_names or cfg.num_keypoints):
            return load_views(cfg)[0].num_keypoints
        if cfg.keypoint_names:
            return len(cfg.keypoint_names)
        if cfg.num_keypoints:
            return cfg.num_keypoints
        return load_labels(cfg).num_keypoints

    def build_model(self, cfg) -> torch.nn.Module:
        if cfg.model is not None:
            return cfg.model
        from bioloop.tasks.pose.models import build_lp_model, build_pose_model

        k = self._num_keypoints(cfg)
        if cfg.pose_model is not None:
            model = build_pose_model(dict(cfg.pose_model), num_keypoints=k, where=_where(cfg, "pose_model"))
        else:
            model = build_lp_model(cfg.model_type, cfg.backbone, k, cfg.downsample_factor, cfg.pretrained,
                                   locref=cfg.locref, seed=cfg.rng_seed_model_pt, where=_where(cfg, "model"))
        if cfg.view_names:  # one backbone + head shared by every view's image
            from bioloop.tasks.pose.multiview import MultiViewModel

            model = MultiViewModel(model, len(cfg.view_names))
        model.heatmap_logits = cfg.heatmap_loss_type != "mse"  # kl/js heads output logits
        model.heatmap_sigma = cfg.heatmap_sigma  # sets the window of the kl/js confidence
        return model

    def build_loss(self, cfg):
        """None (the heatmap targets depend on the model's stride), or the unsupervised losses."""
        if not cfg.losses_to_use:
            return None
        from bioloop.tasks.pose.semi import build_objective

        labels = load_labels(cfg)
        split = self._split(cfg, labels)
        return build_objective(cfg, labels, split["train"], self._dims(cfg), _where(cfg, "losses_to_use"),
                               views=load_views(cfg) if cfg.view_names else None)

    def parameter_groups(self, model, cfg) -> list:
        """Head parameters at learning_rate, the backbone at learning_rate * backbone_lr_factor."""
        backbone = getattr(model, "backbone", None)
        if backbone is None:
            return list(model.parameters())
        ids = set(map(id, backbone.parameters()))
        head = [p for p in model.parameters() if id(p) not in ids]
        return [{"params": head},
                {"params": list(backbone.parameters()), "lr": cfg.learning_rate * cfg.backbone_lr_factor}]

    def before_optimizer_step(self, model, epoch: int, cfg) -> None:
        """Before ``unfreezing_epoch`` the backbone does not move (its gradients are dropped)."""
        backbone = getattr(model, "backbone", None)
        if backbone is not None and epoch < cfg.unfreezing_epoch:
            for p in backbone.parameters():
                p.grad = None

    # ------------------------------------------------------------ data
    @staticmethod
    def _dims(cfg) -> tuple[int, int]:
        return cfg.image_resize_dims.height, cfg.image_resize_dims.width

    @staticmethod
    def _split(cfg, labels):
        from bioloop.tasks.pose.split import split_frames

        return split_frames(labels, train_prob=cfg.train_prob, val_prob=cfg.val_prob, train_frames=cfg.train_frames,
                            seed=cfg.rng_seed_data_pt, where=_where(cfg, "train_prob"))

    def build_datasets(self, cfg):
        from bioloop.tasks.pose.augment import build_augmentation
        from bioloop.tasks.pose.data import PoseFrames
        from bioloop.tasks.pose.labels import check_files
        from bioloop.tasks.pose.split import write_split

        labels = load_labels(cfg)
        views = load_views(cfg) if cfg.view_names else None
        for view, path in zip(views or [labels], self._labels_paths(cfg)):
            check_files(view, str(path))  # every missing image at once, before the first batch
        split = self._split(cfg, labels)
        write_split(Path(cfg.run_dir) / "split.csv", split, labels)
        augmentation = build_augmentation(cfg.imgaug, labels.keypoint_names, _where(cfg, "imgaug"),
                                          flip_pairs=cfg.flip_pairs)
        if cfg.method == "td":  # the pose model sees one animal's crop per item
            from bioloop.tasks.pose.td_task import crop_datasets

            return crop_datasets(cfg, labels, split, augmentation)
        if views is not None:
            return self._view_datasets(cfg, views, split, augmentation)
        context = {"context": 2} if cfg.model_type == "heatmap_mhcrnn" else {}
        dims = self._dims(cfg)
        train = PoseFrames(labels, split["train"], image_resize_dims=dims, augmentation=augmentation, **context)
        val = PoseFrames(labels, split["val"], image_resize_dims=dims, **context) if len(split["val"]) else None
        if cfg.losses_to_use:
            from bioloop.tasks.pose.semi import WithUnlabeled, clip_frames, unlabeled_videos
            from bioloop.tasks.pose.video import UnlabeledFrames

            videos = unlabeled_videos(cfg, _where(cfg, "video_dir"))
            clips = UnlabeledFrames(videos, clip_frames(cfg), resize_hw=dims, context=context.get("context", 0))
            train = WithUnlabeled(train, clips)
        return train, val

    @staticmethod
    def _labels_paths(cfg) -> list[Path]:
        from bioloop.tasks.pose.multiview import view_labels_paths

        return view_labels_paths(cfg)

    def _view_datasets(self, cfg, views, split, augmentation):
        """A multi-view project: every item holds each view's image; unlabeled clips come from the
        sessions' videos of every view."""
        from bioloop.tasks.pose.multiview import MultiViewClips, MultiViewFrames, session_videos

        dims = self._dims(cfg)
        train = MultiViewFrames(views, split["train"], image_resize_dims=dims, augmentation=augmentation)
        val = MultiViewFrames(views, split["val"], image_resize_dims=dims) if len(split["val"]) else None
        if cfg.losses_to_use:
            from bioloop.tasks.pose.semi import WithUnlabeled, clip_frames

            videos = session_videos(cfg.video_dir, cfg.view_names, _where(cfg, "video_dir"))
            train = WithUnlabeled(train, MultiViewClips(videos, clip_frames(cfg), dims))
        return train, val

    def before_training(self, cfg, train_set, logger, say) -> bool:
        """Warn about a split that cannot keep videos apart, on screen and in run.json (``warnings``)."""
        note = self._split(cfg, load_labels(cfg)).note
        if not note:
            return True
        message = f"{_where(cfg, 'train_prob')}: warning: {note}"
        say(message)
        if getattr(logger, "enabled", True):
            from bioloop.config.record import update_run_json

            update_run_json(cfg.run_dir, warnings=[message])
        return True

    # ------------------------------------------------------------ steps
    @staticmethod
    def _core(model):
        return getattr(model, "module", model)  # the model itself under DDP

    def _supervised(self, model, batch, cfg, out=None) -> tuple[torch.Tensor, dict]:
        """The labeled loss; ``out`` is the model's output for ``batch["image"]`` when already computed."""
        out = model(batch["image"]) if out is None else out
        core = self._core(model)
        target = batch["keypoints"]
        if "keypoints" in out:  # regression: mean pixel error over labeled keypoints
            valid = torch.isfinite(target).all(-1)
            diff = (out["keypoints"] - torch.nan_to_num(target)).norm(dim=-1)
            loss = (diff * valid).sum() / valid.sum().clamp(min=1)
            return loss, out
        size = tuple(batch["image"].shape[-2:])
        names = [n for n in ("heatmaps", "heatmaps_sf", "heatmaps_mf") if n in out]
        loss = sum(self._heatmap_loss(out[n].float(), target, size, core.stride, cfg) for n in names)
        if "offsets" in out:
            from bioloop.tasks.pose.heatmaps import encode_offsets

            offsets, mask = encode_offsets(target, size, core.stride, radius=2.0 * core.stride)
            pred = out["offsets"].float().reshape(mask.shape[0], mask.shape[1], 2, *mask.shape[2:])
            weight = mask[:, :, None].expand_as(pred).float()
            loc = torch.nn.functional.smooth_l1_loss(pred, offsets.reshape_as(pred), reduction="none")
            loss = loss + 0.05 * (loc * weight).sum() / weight.sum().clamp(min=1)
        return loss, out

    @staticmethod
    def _heatmap_loss(maps, target, size, stride, cfg) -> torch.Tensor:
        from bioloop.tasks.pose.heatmaps import heatmap_loss, make_heatmaps

        normalize = "peak" if cfg.heatmap_loss_type == "mse" else "sum"
        nan_mode = "uniform" if cfg.uniform_heatmaps_for_nan_keypoints else "zero"
        goal, valid = make_heatmaps(target, size, stride, cfg.heatmap_sigma, kind=cfg.heatmap_target,
                                    nan_mode=nan_mode, normalize=normalize)
        use = torch.ones_like(valid) if cfg.uniform_heatmaps_for_nan_keypoints else valid
        return heatmap_loss(maps, goal, use, kind=cfg.heatmap_loss_type)

    def training_step(self, model, batch, loss_fn, cfg) -> dict[str, torch.Tensor]:
        if loss_fn is None or "unlabeled" not in batch:
            loss, _ = self._supervised(model, batch, cfg)
            return {"loss": loss}
        # one forward over labeled and unlabeled frames (one batched pass is faster; DDP wraps the whole
        # step, so two forwards would work as well)
        images, clips = batch["image"], batch["unlabeled"]
        b, t = clips.shape[:2]
        out = model(torch.cat([images, clips.flatten(0, 1)]))
        labeled = {k: v[:b] for k, v in out.items()}
        loss, _ = self._supervised(model, batch, cfg, out=labeled)
        xy, conf = self._soft_keypoints(model, {k: v[b:] for k, v in out.items()})
        epoch = int(batch["epoch"][0]) if torch.is_tensor(batch["epoch"]) else int(batch["epoch"])
        terms = loss_fn(xy.reshape(b, t, *xy.shape[1:]), conf.reshape(b, t, -1), epoch)
        result = {"supervised_loss": loss.detach(), **{f"{k}_loss": v.detach() for k, v in terms.items()}}
        result["loss"] = loss + sum(terms.values())
        return result

    def _soft_keypoints(self, model, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable keypoints (B, K, 2) and (detached) confidences (B, K) for unsupervised losses."""
        from bioloop.tasks.pose.heatmaps import decode_heatmaps, soft_argmax

        if "keypoints" in out:
            kp = out["keypoints"].float()
            return kp, torch.ones(kp.shape[:2], device=kp.device)
        core = self._core(model)
        maps = self._combined(model, out).float()
        logits, sigma = _heatmap_kind(core)
        _, conf = decode_heatmaps(maps.detach(), core.stride, logits=logits, sigma=sigma)
        return soft_argmax(maps, core.stride, logits=logits), conf

    @staticmethod
    def _combined(model, out: dict) -> torch.Tensor:
        """The heatmaps to decode; the temporal context model keeps its more confident map."""
        if "heatmaps_mf" in out:
            from bioloop.tasks.pose.models import select_more_confident

            logits, sigma = _heatmap_kind(PoseTask._core(model))
            return select_more_confident(out["heatmaps_sf"], out["heatmaps_mf"], logits=logits, sigma=sigma)
        return out["heatmaps"]

    def decode(self, model, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (B, K, 2) in network-input pixels and confidences (B, K)."""
        from bioloop.tasks.pose.heatmaps import decode_heatmaps, decode_with_offsets

        if "keypoints" in out:
            kp = out["keypoints"].float()
            return kp, torch.ones(kp.shape[:2], device=kp.device)
        core = self._core(model)
        maps = self._combined(model, out).float()
        logits, sigma = _heatmap_kind(core)
        if "offsets" in out:
            return decode_with_offsets(maps, out["offsets"].float(), core.stride, logits=logits, sigma=sigma)
        return decode_heatmaps(maps, core.stride, logits=logits, sigma=sigma)

    def validation_step(self, model, batch, loss_fn, cfg) -> dict[str, Any]:
        from bioloop.tasks.pose.data import unresize_keypoints

        loss, out = self._supervised(model, batch, cfg)
        pred, _ = self.decode(model, out)
        if cfg.method == "td":  # crop pixels -> frame pixels through each item's box
            from bioloop.tasks.pose.td_task import crop_hw, crops_to_frame

            boxes, hw = batch["box"].cpu().numpy(), crop_hw(cfg)
            return {"pred": crops_to_frame(pred.float().cpu().numpy(), boxes, hw),
                    "true": crops_to_frame(batch["keypoints"].float().cpu().numpy(), boxes, hw),
                    "loss": float(loss), "n": int(len(pred))}
        size = tuple(batch["image"].shape[-2:])
        frames_pred, frames_true = [], []
        for p, t, hw in zip(pred.float().cpu().numpy(), batch["keypoints"].cpu().numpy(),
                            batch["orig_hw"].cpu().numpy()):
            if hw.ndim == 2:  # multi-view: each view's keypoints back to its own frame size
                p, t = p.reshape(len(hw), -1, 2), t.reshape(len(hw), -1, 2)
                frames_pred.append(np.concatenate([unresize_keypoints(a, tuple(h), size) for a, h in zip(p, hw)]))
                frames_true.append(np.concatenate([unresize_keypoints(a, tuple(h), size) for a, h in zip(t, hw)]))
                continue
            frames_pred.append(unresize_keypoints(p, tuple(hw), size))
            frames_true.append(unresize_keypoints(t, tuple(hw), size))
        return {"pred": np.stack(frames_pred), "true": np.stack(frames_true), "loss": float(loss),
                "n": int(len(pred))}

    def reduce_validation(self, parts, cfg) -> dict[str, float]:
        from bioloop.tasks.pose.metrics import summarize

        pred = np.concatenate([p["pred"] for p in parts])
        true = np.concatenate([p["true"] for p in parts])
        n = sum(p["n"] for p in parts)
        if cfg.view_names:  # <view>/<keypoint>, the keypoints named as in the labels files
            names = list(load_labels(cfg).keypoint_names)
        else:
            names = list(cfg.keypoint_names or [f"kp{i}" for i in range(pred.shape[1])])
        metrics = {"loss": sum(p["loss"] * p["n"] for p in parts) / max(n, 1)}
        sigmas = cfg.eval.oks_sigmas
        if sigmas is not None:
            sigmas = np.broadcast_to(np.asarray(sigmas, float), (true.shape[1],))
        metrics.update(summarize(pred, true, names, thresholds=tuple(cfg.eval.pck_thresholds), sigmas=sigmas))
        if cfg.view_names:
            from bioloop.tasks.pose.multiview import per_view_scores

            metrics.update(per_view_scores(pred, true, cfg.view_names, {"thresholds": tuple(cfg.eval.pck_thresholds)}))
        return metrics

    def figures(self, model, batch, cfg) -> dict[str, Any]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from bioloop.tasks.pose.data import IMAGENET_MEAN, IMAGENET_STD

        out = model(batch["image"][:1])
        pred, _ = self.decode(model, out)
        image = batch["image"][0]
        true = batch["keypoints"][0].cpu().numpy()
        p = pred[0].detach().float().cpu().numpy()
        if cfg.view_names:  # the first view
            k = len(true) // len(cfg.view_names)
            image, true, p = image[0], true[:k], p[:k]
        elif image.ndim == 4:  # a context window: show its centre frame
            image = image[image.shape[0] // 2]
        image = image.cpu().numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(np.clip(image, 0, 1))
        ax.scatter(true[:, 0], true[:, 1], s=25, facecolors="none", edgecolors="lime", label="label")
        ax.scatter(p[:, 0], p[:, 1], s=10, c="magenta", label="prediction")
        ax.legend(loc="lower right", fontsize=6)
        ax.set_axis_off()
        return {"keypoints": fig}

    def check_config(self, cfg) -> list[str]:
        """Labels and images exist, the backbone/head build (meta device; local weights only checked to exist)."""
        import copy
        import os

        import attrs

        from bioloop.errors import BioloopError
        from bioloop.tasks._probe import build_on_meta, missing_files

        where = cfg.source.name if cfg.source else "config"
        problems = missing_files(where, "labels_file", self._labels_paths(cfg))
        labels = None
        if not problems:
            try:
                labels = load_labels(cfg)
            except BioloopError as exc:
                problems.append(str(exc))
        if labels is not None:
            every = load_views(cfg) if cfg.view_names else [labels]
            images = sorted({p for lab in every for p in lab.image_paths if p and not os.path.isfile(p)})
            problems += missing_files(where, "labels_file: labeled images", images)
        if cfg.video_dir:
            problems += missing_files(where, "video_dir", [cfg.video_dir], folder=True)
        probe, spec = cfg, copy.deepcopy(cfg.pose_model)
        if isinstance(cfg.pretrained, str):
            problems += missing_files(where, "pretrained", [cfg.pretrained])
            probe = attrs.evolve(probe, pretrained=False)
        backbone = spec.get("backbone") if isinstance(spec, dict) else None
        if isinstance(backbone, dict) and isinstance(backbone.get("pretrained"), str):
            problems += missing_files(where, "pose_model.backbone.pretrained", [backbone["pretrained"]])
            backbone["pretrained"] = False
            probe = attrs.evolve(probe, pose_model=spec)
        if labels is not None or cfg.keypoint_names or cfg.num_keypoints:
            problems += build_on_meta(self, probe)
        return problems

    def checkpoint_extras(self, cfg) -> dict[str, Any]:
        names = list(cfg.keypoint_names) if cfg.keypoint_names else list(load_labels(cfg).keypoint_names)
        extras = {}
        if cfg.view_names:  # predict writes one CSV per view, with the per-view names
            extras = {"view_names": list(cfg.view_names),
                      "view_keypoint_names": list(cfg.keypoint_names or load_views(cfg)[0].keypoint_names)}
        return {**extras, "keypoint_names": names, "image_resize_dims": [cfg.image_resize_dims.height, cfg.image_resize_dims.width],
                "model_type": cfg.model_type, "downsample_factor": cfg.downsample_factor, "method": cfg.method}

    # ------------------------------------------------------------ predict / evaluate
    def follow_up_training(self, cfg, result, runtime, *, quiet: bool = False) -> dict[str, Any]:
        """Top-down configs train (or resume, or skip when finished) the detector on every rank, through
        the engine, into ``<checkpoint folder>/detector/``: ``{"detector_checkpoint": path}``."""
        if cfg.method != "td":
            return {}
        from bioloop.tasks.pose.td_task import train_config_detector

        labels = load_labels(cfg)
        path = train_config_detector(cfg, labels, self._split(cfg, labels), runtime=runtime, quiet=quiet)
        return {"detector_checkpoint": str(path)}

    def after_training(self, cfg, result, *, quiet: bool = False) -> dict[str, Any]:
        """``eval.predict_vids_after_training``: predict every video of ``eval.test_videos_directory``
        with the best checkpoint into ``<run_dir>/video_preds/`` (+ overlay mp4s with
        ``eval.save_vids_after_training``), with the detector ``follow_up_training`` trained for
        top-down configs."""
        from bioloop.engine.trained import load_trained_model
        from bioloop.tasks.pose.semi import VIDEO_SUFFIXES

        done: dict[str, Any] = {}
        labels = load_labels(cfg)
        split = self._split(cfg, labels)
        if len(split["test"]):
            done["test_scores"] = self._score_test_split(cfg, labels, split["test"], quiet)
        folder = cfg.eval.test_videos_directory
        if not cfg.eval.predict_vids_after_training or not folder:
            return done
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError.at(_where(cfg, "eval.test_videos_directory"), "not a folder", got=str(folder),
                                 fix="point it at a folder of videos, or set eval.predict_vids_after_training = False")
        videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if cfg.view_names:  # one prediction per session: its first view's video finds the others
            from bioloop.tasks.pose.multiview import session_videos

            videos = session_videos(folder, cfg.view_names, _where(cfg, "eval.test_videos_directory"))[0]
        model, extras, path = load_trained_model(cfg)
        extras = {**extras, "checkpoint": str(path)}
        out_dir = Path(cfg.run_dir) / "video_preds"
        written: list = []  # every file: the CSVs and their overlay videos
        def stem(video: Path) -> str:  # a multi-view session's CSVs are <session>_<view>.csv, as its videos
            return video.stem[:-len(cfg.view_names[0]) - 1] if cfg.view_names else video.stem

        csvs = [str(self.predict(cfg, model, extras=extras, input=str(v), output=str(out_dir / f"{stem(v)}.csv"),
                                 save_video=cfg.eval.save_vids_after_training, overwrite=True,
                                 show_progress=not quiet, written=written))
                for v in videos]
        if not quiet and written:
            import sys

            print("video predictions written to " + ", ".join(map(str, written)), file=sys.stderr, flush=True)
        return {**done, "video_predictions": csvs, "video_prediction_files": [str(p) for p in written]}

    def _score_test_split(self, cfg, labels, frames, quiet: bool) -> dict[str, float]:
        """The training checkpoint prediction would use (the best, else the latest) scored on the test
        frames with validation's metrics; the table is printed and written to ``<run_dir>/test_scores.txt``
        (all scores: ``test_scores.json``)."""
        import sys

        from torch.utils.data import DataLoader

        from bioloop.engine.runtime import to_device
        from bioloop.engine.trained import load_trained_model
        from bioloop.tasks.pose.evaluate import score_table, write_report

        model, _, path = load_trained_model(cfg)
        if cfg.method == "td":
            from bioloop.tasks.pose.td_task import crop_hw
            from bioloop.tasks.pose.topdown import PoseCrops

            dataset = PoseCrops(labels, frames, crop_hw=crop_hw(cfg), box_padding=cfg.detector.box_padding, jitter=0.0)
        elif cfg.view_names:
            from bioloop.tasks.pose.multiview import MultiViewFrames

            dataset = MultiViewFrames(load_views(cfg), frames, image_resize_dims=self._dims(cfg))
        else:
            from bioloop.tasks.pose.data import PoseFrames

            context = {"context": 2} if cfg.model_type == "heatmap_mhcrnn" else {}
            dataset = PoseFrames(labels, frames, image_resize_dims=self._dims(cfg), **context)
        device = next(model.parameters()).device
        loader = DataLoader(dataset, batch_size=cfg.validation_batch_size or cfg.batch_size,
                            collate_fn=self.collate)
        with torch.no_grad():
            parts = [self.validation_step(model, to_device(batch, device), None, cfg) for batch in loader]
        scores = self.reduce_validation(parts, cfg)
        names = list(cfg.keypoint_names or labels.keypoint_names)
        if cfg.view_names:
            names = list(labels.keypoint_names)
        elif not cfg.keypoint_names:  # validation names keypoints kp<i> when the config does not list them
            renamed = {f"/kp{i}": f"/{name}" for i, name in enumerate(names)}
            scores = {next((k[:-len(a)] + b for a, b in renamed.items() if k.endswith(a)), k): v
                      for k, v in scores.items()}
        table = score_table(scores, names)
        report = write_report(Path(cfg.run_dir) / "test_scores.json",
                              {"split": "test", "frames": int(len(frames)), "checkpoint": str(path),
                               "scores": scores})
        report.with_suffix(".txt").write_text(f"test split, {len(frames)} labeled frames, {path}\n{table}\n")
        if not quiet:
            print(f"test split ({len(frames)} labeled frames, {path.name}):\n{table}\nwritten to {report}",
                  file=sys.stderr, flush=True)
        return scores

    def predict(self, cfg, model, *, extras, **options):
        if cfg.view_names:
            from bioloop.tasks.pose.multiview import predict_views

            unused = sorted(k for k in ("slp_output",) if options.get(k))
            if unused:
                raise ConfigError.at("predict", "a multi-view prediction writes one CSV per view (and overlay "
                                     "videos), no .slp", got=unused, fix="drop --slp for a multi-view project")
            keep = {k: options[k] for k in ("input", "output", "batch_size", "overwrite", "show_progress", "written",
                                            "save_video") if k in options}
            return predict_views(cfg, model, self, extras=extras, **keep)
        from bioloop.tasks.pose.predict import predict_pose

        return predict_pose(cfg, model, self, extras=extras, **options)

    def evaluate(self, cfg, *, prediction, truth=None, report=None, split=None, **_options) -> dict[str, Any]:
        if cfg.view_names:
            from bioloop.tasks.pose.multiview import evaluate_views

            return evaluate_views(cfg, prediction=prediction, truth=truth, report=report, split=split)
        from bioloop.tasks.pose.evaluate import evaluate_pose

        return evaluate_pose(cfg, prediction=prediction, truth=truth or str(labels_path(cfg)), report=report,
                             split=split)


TASK = PoseTask()
