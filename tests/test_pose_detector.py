"""Top-down detector: keypoint boxes, offline torchvision builders, DLC settings, training through the engine (resume, interrupt, TensorBoard)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bioloop.config.structure import structure_section
from bioloop.errors import CheckpointError, ConfigError
from bioloop.tasks.pose import detector as det
from bioloop.tasks.pose.config import DetectorSettings, PoseConfig
from tests.fakes import FixedDetector

SMALL = "fasterrcnn_mobilenet_v3_large_320_fpn"
NAN = np.nan


# ---------------------------------------------------------------- boxes

def test_boxes_from_keypoints_golden():
    kp = np.full((2, 2, 3, 2), NAN)
    kp[0, 0, :2] = [[10, 20], [30, 60]]  # 20 x 40, padded by 0.1 -> 2 and 4 pixels each side
    kp[0, 1, 0] = [50, 50]  # a single keypoint gives no box
    kp[1, 0, :2] = [[1, 2], [11, 4]]  # padded by 0.5: x -4..16 clipped at -0.5; y 1..5
    kp[1, 1, :2] = [[50, 50], [50, 50]]  # degenerate: grown to the 4 pixel minimum
    boxes = det.boxes_from_keypoints(kp, 0.1, (100, 100))
    np.testing.assert_allclose(boxes[0], [[8, 16, 32, 64]])
    boxes = det.boxes_from_keypoints(kp[1:], 0.5, (100, 100))
    np.testing.assert_allclose(boxes[0], [[-0.5, 1, 16, 5], [48, 48, 52, 52]])
    # clipped at the frame's last pixel centre + 0.5; a box wholly outside is dropped
    assert det.animal_box([[90, 90], [99, 99]], 0.5, (95, 100)).tolist() == [85.5, 85.5, 99.5, 94.5]
    assert det.animal_box([[200, 200], [210, 210]], 0.0, (100, 100)) is None
    assert det.animal_box([[200, 200], [210, 210]], 0.0, None).tolist() == [200, 200, 210, 210]


def test_box_recall():
    truth = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.zeros((0, 4))]
    found = [np.array([[0, 0, 10, 9], [50, 50, 60, 60]]), np.array([[0, 0, 5, 5]])]
    assert det.box_recall(found, truth) == 0.5
    assert np.isnan(det.box_recall([np.zeros((0, 4))], [np.zeros((0, 4))]))


# ---------------------------------------------------------------- building

def test_unknown_variant_is_a_config_error():
    with pytest.raises(ConfigError, match=r"cfg.py: detector.variant: unknown detector \(did you mean "
                                          r"'fasterrcnn_resnet50_fpn'\?\)"):
        det.build_detector("fasterrcnn_resnet50", where="cfg.py: detector")


def test_pretrained_true_cannot_download():
    with pytest.raises(ConfigError, match="detector.pretrained: pretrained=True would download.*offline.*"
                                          "set pretrained to its path"):
        det.build_detector(SMALL, True)
    with pytest.raises(ConfigError, match="pretrained must be False or a local weights file"):
        det.build_detector(SMALL, 3)


def test_pretrained_file_loads_strictly(tmp_path):
    torch.manual_seed(0)
    source = det.build_detector(SMALL, num_classes=3)  # e.g. another class count: its class head stays fresh
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = det.build_detector(SMALL, str(tmp_path / "w.pt"))
    key = "backbone.body.0.0.weight"
    assert torch.equal(model.state_dict()[key], source.state_dict()[key])
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    state = source.state_dict()
    del state[key]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not fit the model: 1 missing key"):
        det.build_detector(SMALL, str(tmp_path / "bad.pt"))
    with pytest.raises(CheckpointError, match="detector.pretrained: weights file not found"):
        det.build_detector(SMALL, str(tmp_path / "missing.pt"))


def test_detect_filters_sorts_and_converts_to_pixel_centres():
    out = {"boxes": torch.tensor([[10.5, 20.5, 30.5, 40.5], [0.5, 0.5, 5.5, 5.5], [1.0, 1, 2, 2], [3.0, 3, 9, 9]]),
           "scores": torch.tensor([0.6, 0.9, 0.2, 0.8]), "labels": torch.tensor([1, 1, 1, 0])}
    frames = [np.zeros((48, 64, 3), np.uint8)] * 2
    result = det.detect(FixedDetector([out, out]), frames, score_threshold=0.5, max_animals=None, batch_size=2)
    assert len(result) == 2
    boxes, scores = result[0]
    np.testing.assert_allclose(boxes, [[0, 0, 5, 5], [10, 20, 30, 40]])
    np.testing.assert_allclose(scores, [0.9, 0.6])
    boxes, scores = det.detect(FixedDetector([out]), frames[:1], score_threshold=0.5, max_animals=1)[0]
    np.testing.assert_allclose(boxes, [[0, 0, 5, 5]])


# ---------------------------------------------------------------- settings

def test_dlc_nested_detector_section_maps_to_flat_settings():
    dlc = {"data": {"colormode": "RGB", "train": {"hflip": False, "normalize_images": True},
                    "inference": {"normalize_images": True}},
           "model": {"type": "SSDLite", "pretrained": False},
           "runner": {"type": "DetectorTrainingRunner", "eval_interval": 10,
                      "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
                      "scheduler": {"type": "LRListScheduler", "params": {"milestones": [90], "lr_list": [[1e-5]]}},
                      "snapshots": {"max_snapshots": 3, "save_epochs": 25, "save_optimizer_state": False}},
           "train_settings": {"batch_size": 1, "epochs": 100, "dataloader_workers": 0},
           "resume_training_from": "snap/detector-020.pt"}
    settings, problems = structure_section(DetectorSettings, dlc, where="cfg.py")
    assert problems == []
    assert settings.variant == "ssdlite320_mobilenet_v3_large" and settings.hflip is False
    assert (settings.validate_every, settings.max_snapshots, settings.save_every_n_epochs) == (10, 3, 25)
    assert (settings.batch_size, settings.epochs) == (1, 100)
    assert settings.optimizer["type"] == "AdamW" and settings.scheduler["type"] == "LRListScheduler"
    assert settings.resume_training_from == "snap/detector-020.pt"
    fr, _ = structure_section(DetectorSettings, {"model": {"type": "FasterRCNN", "variant": SMALL}}, where="c")
    assert fr.variant == SMALL


def test_unknown_nested_detector_keys_are_reported():
    cfg = {"task": "pose", "method": "td",
           "detector": {"runner": {"snapshots": {"max_snapshot": 3}, "gpus": [0]},
                        "data": {"train": {"affine": {"p": 0.9}}},
                        "model": {"type": "SSDLite", "variant": "fasterrcnn_resnet50_fpn"}}}
    _, problems = structure_section(PoseConfig, cfg, where="cfg.py")
    text = "\n".join(problems)
    for key in ("detector.runner.snapshots.max_snapshot", "detector.runner.gpus", "detector.data.train.affine",
                "detector.model.type"):
        assert f"cfg.py: unknown setting '{key}'" in text
    _, problems = structure_section(DetectorSettings, {"model": {"type": "YOLO"}}, where="cfg.py")
    assert problems and "unknown setting 'model.type'" in problems[0]


# ---------------------------------------------------------------- training

@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    from bioloop.data.synthetic_pose import make_pose_dataset
    from bioloop.tasks.pose.labels import read_labels

    ds = make_pose_dataset(tmp_path_factory.mktemp("pose"), n_frames=2, image_size=(64, 80), n_animals=2,
                           n_videos=1, video=False)
    return read_labels(ds.csv_path)


def _settings(**kw):
    return DetectorSettings(variant=SMALL, batch_size=2, learning_rate=1e-4, **kw)


def _step_lr(gamma):
    return {"type": "StepLR", "params": {"step_size": 1, "gamma": gamma}}


def _metrics(folder):
    """The engine's metrics.csv as one dict per epoch: {"epoch", "train/loss", "train/lr", "val/recall", ...}."""
    rows: dict[int, dict] = {}
    with open(folder / "metrics.csv", newline="") as handle:
        for r in csv.DictReader(handle):
            rows.setdefault(int(r["epoch"]), {"epoch": r["epoch"]})[r["tag"]] = r["value"]
    return [rows[e] for e in sorted(rows)]


def _count_steps(monkeypatch):
    from bioloop.tasks.pose.detector_task import DetectorTask

    calls = []
    real = DetectorTask.training_step
    monkeypatch.setattr(DetectorTask, "training_step", lambda self, *a: calls.append(1) or real(self, *a))
    return calls


def test_train_resume_and_refuse(labels, tmp_path, monkeypatch, one_thread):
    calls = _count_steps(monkeypatch)
    out = tmp_path / "det"
    first = det.train_detector(_settings(epochs=1, scheduler=_step_lr(0.5)), labels, [0, 1], out, seed=3,
                               show_progress=False, where="cfg.py: detector", tensorboard=False, precision="bf16")
    assert first == out / "detector-001.pt" and len(calls) == 1
    assert json.loads((out / "run.json").read_text())["precision"] == "bf16"  # the engine's autocast ran it
    before = first.read_bytes()
    loss1 = _metrics(out)[0]["train/loss"]
    # two epochs: continues at epoch 2; epoch 1 is not run again
    final = det.train_detector(_settings(epochs=2, scheduler=_step_lr(0.5)), labels, [0, 1], out, val_rows=[0], seed=3,
                               show_progress=False, where="cfg.py: detector", tensorboard=False)
    assert final == out / "detector-002.pt" and len(calls) == 2
    assert torch.load(final, weights_only=False)["epoch"] == 2 and first.read_bytes() == before
    rows = _metrics(out)
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0]["train/loss"] == loss1
    assert [float(r["train/lr"]) for r in rows] == pytest.approx([1e-4, 5e-5])  # the scheduler resumed too
    assert 0 <= float(rows[1]["val/recall"]) <= 1 and (out / "detector_best.pth").is_file()
    # finished: nothing is retrained
    assert det.train_detector(_settings(epochs=2), labels, [0, 1], out, show_progress=False, tensorboard=False) == final
    assert len(calls) == 2
    with pytest.raises(CheckpointError, match=r"cfg.py: detector.load_model: None starts the detector afresh, "
                                              r"but .* holds 2 detector snapshot\(s\)"):
        det.train_detector(_settings(epochs=2, load_model=None), labels, [0, 1], out, where="cfg.py: detector")
    with pytest.raises(CheckpointError, match="detector.resume_training_from: detector snapshot not found"):
        det.train_detector(_settings(resume_training_from=str(tmp_path / "nope.pt")), labels, [0], tmp_path / "x")
    with pytest.raises(CheckpointError, match="this snapshot is a fasterrcnn_mobilenet_v3_large_320_fpn, the "
                                              "settings ask for ssdlite320_mobilenet_v3_large"):
        det.train_detector(DetectorSettings(variant="ssdlite320_mobilenet_v3_large", resume_training_from=str(first),
                                            epochs=3), labels, [0], tmp_path / "y")
    # a detector loads back from its folder (the newest snapshot) and detects on frames
    model = det.load_detector(out, _settings())
    frames = [np.zeros((64, 80, 3), np.uint8)]
    (boxes, scores), = det.detect(model, frames, score_threshold=0.0, max_animals=3)
    assert boxes.shape[1:] == (4,) and len(boxes) == len(scores) <= 3
    with pytest.raises(CheckpointError, match="no detector snapshot"):
        det.load_detector(tmp_path)


def test_interrupt_leaves_a_resumable_checkpoint_and_tensorboard_scalars(labels, tmp_path, monkeypatch, one_thread):
    """SIGINT mid-epoch: the engine saves detector_interrupted.pth; 'latest' resumes at the next batch."""
    import signal

    from bioloop.errors import TrainingInterrupted
    from bioloop.tasks.pose.detector_task import DetectorTask

    real = DetectorTask.training_step
    calls = []

    def step(self, *args):
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # the engine's handler: stop at the next optimizer step
        return real(self, *args)

    monkeypatch.setattr(DetectorTask, "training_step", step)
    out = tmp_path / "det"
    settings = DetectorSettings(variant=SMALL, batch_size=1, epochs=1)
    with pytest.raises(TrainingInterrupted, match=r"cfg.py: training interrupted by signal 2 in epoch 1 after 1 "
                                                  r"batches; checkpoint saved to .*detector_interrupted.pth; resume "
                                                  r"with `bioloop train .*cfg.py -s detector.load_model=latest"):
        det.train_detector(settings, labels, [0, 1], out, seed=1, show_progress=False, where="cfg.py: detector",
                           source=_source(tmp_path))
    state = torch.load(out / "detector_interrupted.pth", weights_only=False)
    assert (state["epoch"], state["batch_in_epoch"], state["extras"]["variant"]) == (0, 1, SMALL)
    assert not det.snapshot_paths(out)
    final = det.train_detector(settings, labels, [0, 1], out, seed=1, show_progress=False)
    assert final == out / "detector-001.pt" and len(calls) == 2  # only the second batch ran again
    assert not (out / "detector_interrupted.pth").exists()
    # the resumed run ends where an uninterrupted one does
    whole = det.train_detector(settings, labels, [0, 1], tmp_path / "whole", seed=1, show_progress=False,
                               tensorboard=False)
    resumed, straight = (torch.load(p, weights_only=False)["model"] for p in (final, whole))
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/loss_classifier", "train/loss_box_reg", "train/lr"} <= tags
    assert all(np.isfinite(e.value) for e in events.Scalars("train/loss"))


def _source(folder):
    from bioloop.config.loader import ConfigSource

    path = folder / "cfg.py"
    path.write_text("task = 'pose'\n")
    return ConfigSource(path=path, sha256="0" * 64)


def test_snapshot_and_data_errors(labels, tmp_path, monkeypatch, one_thread):
    from bioloop.engine.rng import capture_rng_state
    from bioloop.errors import TrainingError
    from bioloop.tasks.pose.detector_task import DetectorFrames

    with pytest.raises(TrainingError, match="no training frames for the detector"):
        det.train_detector(_settings(load_model=None), labels, [], tmp_path / "a")
    with pytest.raises(CheckpointError, match="detector.load_model: detector snapshot not found"):
        det.train_detector(_settings(load_model=str(tmp_path / "nope.pt")), labels, [0], tmp_path / "a")
    torch.save({"model": {}, "epoch": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not a bioloop detector snapshot"):
        det.load_detector(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="detector snapshot not found"):
        det.load_detector(tmp_path / "missing.pt")
    # a snapshot whose optimizer state does not fit (another number of parameter groups)
    model = det.build_detector(SMALL, min_size=64, max_size=80)
    optimizer = torch.optim.AdamW([{"params": [p]} for p in list(model.parameters())[:2]])
    torch.save({"extras": {"kind": "detector", "variant": SMALL, "min_size": 64, "max_size": 80}, "epoch": 1,
                "step": 1, "task": "pose", "rng": capture_rng_state(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": None}, tmp_path / "snap.pt")
    with pytest.raises(CheckpointError, match="snap.pt: optimizer state does not fit this optimizer"):
        det.train_detector(_settings(epochs=2, resume_training_from=str(tmp_path / "snap.pt")), labels, [0],
                           tmp_path / "b", tensorboard=False)
    # a diverged step stops training with a TrainingError
    real_item = DetectorFrames.__getitem__

    def nan_item(self, key):
        image, target = real_item(self, key)
        return image * float("nan"), target

    monkeypatch.setattr(DetectorFrames, "__getitem__", nan_item)
    with pytest.raises(TrainingError, match="non-finite loss at epoch 1"):
        det.train_detector(_settings(epochs=1, load_model=None), labels, [0], tmp_path / "c", tensorboard=False)


def test_detector_optimizer_settings():
    from bioloop.tasks.pose.detector_task import _check_optimizer, detector_training_config

    sgd = _settings(optimizer={"type": "SGD", "params": {"lr": 0.1}})
    cfg = detector_training_config(sgd, Path("/tmp/d"), load_model=None, seed=0, device="cpu", precision="32",
                                   tensorboard=False)
    assert cfg.optimizer == {"type": "SGD", "params": {"lr": 0.1}} and cfg.scheduler is None
    assert cfg.checkpoint_dir == Path("/tmp/d") and cfg.run_dir == Path("/tmp/d")
    assert detector_training_config(_settings(), Path("/tmp/d"), load_model=None, seed=0, device="cpu",
                                    precision="32", tensorboard=False).optimizer == "AdamW"
    with pytest.raises(ConfigError, match=r"cfg.py: detector.optimizer"):
        _check_optimizer(_settings(optimizer={"type": "NoSuchOptimizer"}), "cfg.py: detector")
    _, problems = structure_section(DetectorSettings, {"model": {"type": "YOLO"}}, where="cfg.py")
    assert problems and "unknown setting 'model.type'" in problems[0]
