"""The tracking task wired to the engine: datasets, steps, validation metrics, view_batch, the golden tracking path."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bioloop import api
from bioloop.errors import ConfigError
from bioloop.tasks import get_task
from bioloop.tasks.tracking.types import Instances

pytestmark = pytest.mark.usefixtures("one_thread")

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

MODEL = {"d_model": 16, "nhead": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "dropout": 0.0,
         "dropout_attn_head": 0.0, "num_layers_attn_head": 1,
         "encoder_cfg": {"model_name": "test_resnet", "backend": "timm", "in_chans": 3}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from bioloop.data.synthetic_tracking import make_tracking_dataset

    return make_tracking_dataset(tmp_path_factory.mktemp("trk") / "data", n_frames=16, n_objects=3,
                                 image_size=(64, 80), layouts=("slp", "ctc"))


def _config(tmp_path, data, extra: str = "") -> str:
    path = tmp_path / "cfg.py"
    path.write_text(f"""
task = "tracking"
model = {MODEL!r}
dataset = {{"train_dataset": {{"slp_files": [{data.slp_path!r}], "crop_size": 16, "padding": 0, "clip_length": 8}},
           "val_dataset": {{"slp_files": [{data.slp_path!r}], "crop_size": 16, "padding": 0, "clip_length": 8,
                           "mode": "val"}}}}
runner = {{"metrics": {{"val": ["num_switches", "mota"], "test": ["num_switches", "mota"]}}}}
epochs = 1
batch_size = 2
iterations_per_epoch = 1
validation_batch_limit = 1
num_workers = 0
logs_save_path = "runs/logs"
model_save_path = "runs/ckpt/{{model_name}}_{{epoch}}.pth"
{extra}
""")
    return str(path)


def test_registered_with_metric_directions():
    task = get_task("tracking")
    assert task.default_key_metric == "loss"
    assert [task.metric_mode(m) for m in ("loss", "num_switches", "num_misses", "mota", "idf1")] == \
        ["min", "min", "min", "max", "max"]


def test_train_validates_with_motmetrics_and_renders_view_batch(tmp_path, data):
    cfg = _config(tmp_path, data, "view_batch = {'enable': True, 'num_frames': 2}")
    result = api.train(cfg, quiet=True)
    assert result["epochs_completed"] == 1
    metrics = result["last_metrics"]
    assert set(metrics) == {"loss", "num_switches", "mota"} and np.isfinite(metrics["loss"])
    assert (tmp_path / "runs" / "logs" / "view_batch.png").stat().st_size > 1000


def test_view_batch_no_train_stops_before_training(tmp_path, data):
    cfg = _config(tmp_path, data, "view_batch = {'enable': True, 'no_train': True}")
    result = api.train(cfg, quiet=True)
    assert result["epochs_completed"] == 0 and result["optimizer_steps"] == 0
    assert (tmp_path / "runs" / "logs" / "view_batch.png").is_file()


def test_in_chans_must_match_the_crops(tmp_path, data):
    cfg = api.load_config(_config(tmp_path, data, "model['encoder_cfg'] = {**model['encoder_cfg'], 'in_chans': 1}"))
    with pytest.raises(ConfigError, match=r"gtr.encoder_cfg.in_chans: the crops of .* have 3 channels.*got 1.*"
                                          r"in_chans = 3"):
        get_task("tracking").build_datasets(cfg)


def test_training_step_encodes_once_and_averages_clip_losses(tmp_path, data):
    cfg = api.load_config(_config(tmp_path, data))
    task = get_task("tracking")
    train, _ = task.build_datasets(cfg)
    model, loss_fn = task.build_model(cfg).eval(), task.build_loss(cfg)  # eval: batch norm per crop, not per batch
    batch = task.collate([train[(0, 1)], train[(1, 2)]])
    calls = []
    model.visual_encoder.register_forward_hook(lambda *a: calls.append(1))
    loss = task.training_step(model, batch, loss_fn, cfg)["loss"]
    assert len(calls) == 1 and loss.requires_grad
    singles = [task.training_step(model, task.collate([train[key]]), loss_fn, cfg)["loss"] for key in [(0, 1), (1, 2)]]
    assert float(loss.detach()) == pytest.approx(float(sum(singles).detach()) / 2, rel=1e-4)


def test_merge_clips_gives_each_clip_its_own_frames_and_ids():
    from bioloop.tasks.tracking.task import merge_clips

    def inst(t, ids):
        n = len(ids)
        return Instances(t, np.zeros((n, 1, 2)), np.tile([0.0, 0, 2, 2], (n, 1)), ids)

    clips = [{"sequence": 0, "start": 0, "gt": [inst(0, [0]), inst(1, [0])], "pred": [inst(0, [5]), inst(1, [5])]},
             {"sequence": 0, "start": 2, "gt": [inst(2, [0])], "pred": [inst(2, [0])]}]
    gt, pred = merge_clips(clips, persistent=False)
    assert [f.frame for f in gt] == [0, 1, 2] and gt[2].track_ids.tolist() == [1_000_000]
    assert pred[2].track_ids.tolist() == [1_000_000]
    gt, pred = merge_clips(clips, persistent=True)  # one namespace: the id change is a switch
    assert gt[2].track_ids.tolist() == [0] and pred[2].track_ids.tolist() == [0]


def test_perfect_scores_track_crossing_objects_without_switches(tmp_path, data):
    """Golden: the whole predict path (chunks, crops, features, Tracker) with perfect logits."""
    from bioloop.tasks.tracking.io import read_slp
    from bioloop.tasks.tracking.metrics import mot_metrics
    from bioloop.tasks.tracking.predict import predict_tracking

    cfg = api.load_config(_config(tmp_path, data, "runner = {'persistent_tracking': {'test': True}}"))
    task = get_task("tracking")
    gt = read_slp(data.slp_path)[0]

    def perfect(window, hw):
        ref_ids = np.array([gt.frames[f].track_ids[i] for f, i in zip(window.ref_frames, window.ref_index)])
        return np.where(window.query.track_ids[:, None] == ref_ids[None], 10.0, -10.0)

    out = predict_tracking(cfg, task.build_model(cfg), input=data.slp_path, output=str(tmp_path / "t.slp"),
                           show_progress=False, score_fn=perfect)
    pred = read_slp(out)[0]
    scores = mot_metrics(gt.frames, pred.frames, ["num_switches", "mota"], match="iou")
    assert data.crossing_pair == (0, 1)
    assert scores == {"num_switches": 0.0, "mota": 1.0}
    # tracking_score = the association score: 0 for the new tracks of frame 0; in frame 1 each
    # track has one reference, softmax over 3 instances (10, -10, -10) + background 0
    import sleap_io as sio

    labels = sio.load_slp(str(out), open_videos=False)
    by_frame = {lf.frame_idx: [i.tracking_score for i in lf.instances] for lf in labels.labeled_frames}
    e = np.exp(10.0)
    assert by_frame[0] == [0.0] * 3
    np.testing.assert_allclose(by_frame[1], [e / (e + 2 / e + 1)] * 3)
    np.testing.assert_allclose(by_frame[2], [2 * e / (e + 2 / e + 1)] * 3)  # two reference frames
    assert labels.provenance["bioloop_untracked_instances"] == 0
    assert labels.provenance["bioloop_instances"] == sum(len(f) for f in gt.frames)


def test_instances_left_without_a_track_are_counted_and_reported(tmp_path, data, capsys):
    import sleap_io as sio

    from bioloop.tasks.tracking.predict import predict_tracking

    extra = "tracker = {'max_tracks': 1, 'max_center_dist': 0.5}\nrunner = {'persistent_tracking': {'test': True}}"
    cfg = api.load_config(_config(tmp_path, data, extra))
    out = predict_tracking(cfg, get_task("tracking").build_model(cfg), input=data.slp_path,
                           output=str(tmp_path / "t.slp"), show_progress=False)
    labels = sio.load_slp(str(out), open_videos=False)
    untracked = sum(i.track is None for lf in labels.labeled_frames for i in lf.instances)
    total = sum(len(lf.instances) for lf in labels.labeled_frames)
    assert 0 < untracked < total and labels.provenance["bioloop_untracked_instances"] == untracked
    line = [x for x in capsys.readouterr().err.splitlines() if "without a track" in x]
    assert line == [f"tracking: {untracked} of {total} instances were left without a track (tracker max_tracks=1, "
                    "max_center_dist=0.5; frames over max_objects are not tracked)"]


def test_gt_list_applies_to_ctc_data_only():
    from bioloop.errors import ConfigError
    from bioloop.tasks.tracking.task import read_labels_file

    with pytest.raises(ConfigError, match=r"cfg.py: dataset.train_dataset: gt_list is the track table of Cell "
                                          r"Tracking Challenge data"):
        read_labels_file("a.slp", None, where="cfg.py: dataset.train_dataset", gt_list="gt.txt")


def test_train_split_metrics_are_logged(tmp_path, data):
    import csv

    cfg = _config(tmp_path, data, "runner = {'metrics': {'train': ['num_switches', 'mota'], 'val': []}}\n"
                                  "logger = {'log_every_n_steps': 1}")
    api.train(cfg, quiet=True)
    with open(tmp_path / "runs" / "logs" / "metrics.csv") as f:
        tags = {row["tag"]: float(row["value"]) for row in csv.DictReader(f)}
    assert "train/num_switches" in tags and "train/mota" in tags and tags["train/num_switches"] >= 0


def _untrack(src: str, dest, every: int):
    """A copy of a .slp where every ``every``-th instance (1: all) has lost its track."""
    import sleap_io as sio

    labels = sio.load_slp(src, open_videos=False)
    k = 0
    for lf in labels.labeled_frames:
        for inst in lf.instances:
            if k % every == 0:
                inst.track = None
            k += 1
    sio.save_slp(labels, str(dest), verbose=False)
    return str(dest), (k + every - 1) // every, k


def test_untracked_labels_stop_training_or_say_what_the_loss_ignores(tmp_path, data, capsys):
    from bioloop.errors import DataError
    from bioloop.tasks.tracking.task import check_training_labels, read_labels_file

    path, n, total = _untrack(data.slp_path, tmp_path / "none.slp", 1)
    seqs = read_labels_file(path, data.video_path, where="cfg.py: dataset.train_dataset")
    with pytest.raises(DataError, match=rf"none.slp: none of its {total} instances has a track, so there is "
                                        rf"nothing to learn .*got '{total} untracked'\); proofread"):
        check_training_labels(seqs, path, where="cfg.py: dataset.train_dataset")
    path, n, total = _untrack(data.slp_path, tmp_path / "some.slp", 4)
    seqs = read_labels_file(path, data.video_path, where="w")
    check_training_labels(seqs, path, where="w")
    assert 0 < n < total and capsys.readouterr().err.splitlines() == [
        f"w: {n} of {total} instances have no track; the association loss ignores them (they only appear as "
        "other instances)"]


def test_ctc_ground_truth_is_checked_before_training(tmp_path, data):
    import shutil

    from bioloop.errors import DataError
    from bioloop.tasks.tracking.task import check_training_labels, read_labels_file

    root = tmp_path / "ctc"
    shutil.copytree(data.ctc_root, root)
    tra = next(root.rglob("man_track.txt"))
    rows = [line.split() for line in tra.read_text().splitlines()]
    rows[0][2] = str(int(rows[0][2]) + 5)  # label 1 said to live 5 frames longer than its masks
    tra.write_text("\n".join(" ".join(r) for r in rows) + "\n")
    seqs = read_labels_file(str(tra.parent), None, where="cfg.py: dataset.train_dataset")
    with pytest.raises(DataError, match=r"cfg.py: dataset.train_dataset: this Cell Tracking Challenge ground truth "
                                        r"fails the consistency checks.*label 1 is listed for frames"):
        check_training_labels(seqs, str(tra.parent), where="cfg.py: dataset.train_dataset")
