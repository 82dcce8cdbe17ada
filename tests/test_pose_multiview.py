"""Multi-camera pose projects (Lightning Pose ``view_names``, one labels CSV per view): data, model, loss, CLI path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bioloop.data.synthetic_pose import KEYPOINT_COLOURS, make_multiview_pose_dataset
from bioloop.errors import DataError


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_multiview_pose_dataset(tmp_path_factory.mktemp("mv") / "data", n_frames=8, n_sessions=4,
                                       image_size=(64, 64), seed=0)


class _Cfg:
    """The settings the multi-view readers use."""

    def __init__(self, data, **kw):
        self.data_dir, self.labels_file = data.root, [Path(p).name for p in data.csv_paths]
        self.view_names, self.keypoint_names, self.num_keypoints = list(data.view_names), None, None
        self.__dict__.update(kw)


def test_the_second_camera_sees_the_same_animal_through_its_affine_map(project):
    from bioloop.tasks.pose.labels import read_labels

    top, side = (read_labels(p) for p in project.csv_paths)
    assert top.image_paths[3].endswith("labeled-data/session0_top/img0003.png")
    assert side.image_paths[3].endswith("labeled-data/session0_side/img0003.png")
    m = project.view_transforms[1]
    mapped = top.keypoints[:, 0] @ m[:, :2].T + m[:, 2]
    both = np.isfinite(side.keypoints[:, 0]).all(-1) & np.isfinite(mapped).all(-1)
    assert both.mean() > 0.8
    np.testing.assert_allclose(side.keypoints[:, 0][both], mapped[both], atol=1e-4)  # the CSV stores float32
    # the keypoint's coloured disk is drawn where the side view's label says (the nose is red)
    import cv2

    nose = side.keypoint_names.index("nose")
    hits = 0
    for row in np.flatnonzero(np.isfinite(side.keypoints[:, 0, nose]).all(-1))[:10]:
        x, y = np.rint(side.keypoints[row, 0, nose]).astype(int)
        rgb = cv2.imread(side.image_paths[row])[..., ::-1][y, x].astype(float)
        hits += np.abs(rgb - KEYPOINT_COLOURS["nose"]).max() < 60
    assert hits >= 8


def test_views_must_list_the_same_frames_in_the_same_order(project, tmp_path):
    from bioloop.tasks.pose.multiview import combine_views, read_views

    views = read_views(_Cfg(project), "cfg.py")
    combined = combine_views(views, project.view_names)
    assert combined.keypoint_names[:2] == ["top/nose", "top/ear_left"] and combined.keypoint_names[8] == "side/nose"
    np.testing.assert_array_equal(combined.keypoints[:, 0, 8:], views[1].keypoints[:, 0])
    table = pd.read_csv(project.csv_paths[1], header=[0, 1, 2], index_col=0)
    table.iloc[[0, 1]].set_axis(table.index[[1, 0]]).pipe(
        lambda t: pd.concat([t, table.iloc[2:]])).to_csv(tmp_path / "side.csv")
    bad = _Cfg(project, labels_file=[project.csv_paths[0], str(tmp_path / "side.csv")])
    with pytest.raises(DataError, match=r"side.csv: row 0 is image img0001.png but view top's row 0 is img0000.png"):
        read_views(bad, "cfg.py")
    table.iloc[:-1].to_csv(tmp_path / "short.csv")
    with pytest.raises(DataError, match=r"view side has 31 labeled frames, view top has 32"):
        read_views(_Cfg(project, labels_file=[project.csv_paths[0], str(tmp_path / "short.csv")]), "cfg.py")


def test_the_model_runs_one_shared_network_over_every_view():
    from bioloop.tasks.pose.models import build_lp_model
    from bioloop.tasks.pose.multiview import MultiViewModel

    base = build_lp_model("heatmap", "test_resnet", 3, 2, seed=0).eval()
    model = MultiViewModel(base, 2).eval()
    images = torch.randn(2, 2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(images)["heatmaps"]
        assert out.shape == (2, 6, 8, 12)
        for v in range(2):
            torch.testing.assert_close(out[:, 3 * v:3 * v + 3], base(images[:, v])["heatmaps"])
    with pytest.raises(DataError, match=r"2 views"):
        model(images[:, 0])


def test_pca_multiview_columns_hold_the_views_of_one_body_part(project):
    """The views' columns (v*K + k) make each body part's 2V coordinates one affine image of a point: a
    3-component PCA reconstructs true labels to ~0 px, and labels of different frames paired across views
    (views out of sync) far off."""
    from bioloop.tasks.pose.multiview import column_matches
    from bioloop.tasks.pose.unsupervised import fit_pca, format_multiview

    k = len(project.keypoint_names)
    matches = column_matches(2, k)
    assert matches == [list(range(k)), list(range(k, 2 * k))]
    kp = project.keypoints.reshape(len(project.keypoints), 2 * k, 2)
    rows = format_multiview(kp, matches)
    fit = fit_pca(rows[np.isfinite(rows).all(1)], components_to_keep=3)
    good = fit.reprojection_error(rows[np.isfinite(rows).all(1)])
    shifted = kp.copy()
    shifted[:, k:] = np.roll(kp[:, k:], 5, axis=0)
    off = format_multiview(shifted, matches)
    off = fit.reprojection_error(off[np.isfinite(off).all(1)])
    assert np.nanmax(good) < 1e-3 and np.nanmedian(off) > 2.0


def test_session_videos_need_every_view(project, tmp_path):
    import shutil

    from bioloop.tasks.pose.multiview import session_videos

    videos = session_videos(Path(project.root) / "videos", project.view_names, "cfg.py: video_dir")
    assert [p.name for p in videos[1]] == [f"session{s}_side.mp4" for s in range(4)]
    shutil.copy(videos[0][0], tmp_path / "extra_top.mp4")
    with pytest.raises(DataError, match=r"session extra has no video of view\(s\) \['side'\]"):
        session_videos(tmp_path, project.view_names, "cfg.py: video_dir")


def _config(tmp_path, project, **extra):
    settings = {"task": "pose", "data_dir": project.root, "labels_file": [Path(p).name for p in project.csv_paths],
                "view_names": list(project.view_names), "backbone": "test_resnet",
                "image_resize_dims": {"height": 64, "width": 64}, "heatmap_loss_type": "kl", "heatmap_sigma": 1.5,
                "imgaug": "default", "unfreezing_epoch": 0, "batch_size": 8, "epochs": 2,
                "iterations_per_epoch": 4, "learning_rate": 4e-3, "optimizer": {"type": "Adam"},
                "train_prob": 0.5, "val_prob": 0.25, "random_seed": 0, "load_model": None, "model_name": "mv",
                "losses_to_use": ["pca_multiview"], "video_dir": str(Path(project.root) / "videos"),
                "dali": {"base_train_sequence_length": 8}, "model_save_path": str(tmp_path / "ck" / "{model_name}_{epoch}.pth"),
                "logs_save_path": str(tmp_path / "logs"), **extra}
    path = tmp_path / "mv.py"
    path.write_text("".join(f"{key} = {value!r}\n" for key, value in settings.items()))
    return path


def test_config_check_names_what_a_multiview_project_cannot_do(project, tmp_path):
    from bioloop.api import load_config
    from bioloop.errors import BioloopError

    for extra, message in ((dict(model_type="heatmap_mhcrnn"), "heatmap_mhcrnn (context frames) is not available"),
                           (dict(labels_file="CollectedData_top.csv"), "one labels file per view is needed"),
                           (dict(view_names=None), "a list of labels files is a multi-view project"),
                           (dict(losses_to_use=["pca_singleview"], columns_for_singleview_pca=[0, 1]),
                            "pca_singleview is not available with view_names")):
        with pytest.raises(BioloopError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_config(str(_config(tmp_path, project, **extra)))


@pytest.mark.slow
def test_a_two_camera_project_trains_with_pca_multiview_predicts_a_csv_per_view_and_scores_each_view(
        project, tmp_path):
    from bioloop import api
    from bioloop.tasks.pose.labels import read_labels

    videos = Path(project.root) / "videos"
    config = _config(tmp_path, project, losses_to_use=["pca_multiview", "temporal"],
                     eval={"predict_vids_after_training": True, "test_videos_directory": str(videos)})
    torch.set_num_threads(2)
    result = api.train(str(config), quiet=True)
    metrics = pd.read_csv(Path(result["run_dir"]) / "metrics.csv")
    assert (metrics["tag"] == "train/pca_multiview_loss").sum() == 2
    assert (metrics["tag"] == "train/temporal_loss").sum() == 2
    # after training, every session's videos: one CSV per view named like the view's video
    assert sorted(Path(p).name for p in result["video_prediction_files"]) == sorted(
        f"session{s}_{v}.csv" for s in range(4) for v in project.view_names)
    test = result["test_scores"]
    assert {"pixel_error/top", "pixel_error/side", "pixel_error/top/nose", "pixel_error/side/tail_tip"} <= set(test)
    # a session's video: one CSV per view, every frame
    written = []
    first = api.predict(str(config), input=project.video_paths[0][1], output=str(tmp_path / "pred.csv"),
                        show_progress=False, save_video=True, written=written)
    assert first == tmp_path / "pred_top.csv"
    assert [Path(p).name for p in written] == ["pred_top.csv", "pred_side.csv", "pred_top.labeled.mp4",
                                               "pred_side.labeled.mp4"]
    from bioloop.tasks.pose.video import VideoReader

    with VideoReader(tmp_path / "pred_side.labeled.mp4") as reader:
        assert len(reader) == 8
    assert read_labels(tmp_path / "pred_side.csv").num_frames == 8
    # the labeled images of every view, scored per view on the run's test split: the after-training numbers
    labeled = api.predict(str(config), input=project.csv_paths[0], output=str(tmp_path / "lab.csv"),
                          show_progress=False)
    scores = api.evaluate(str(config), prediction=str(labeled), split="test")
    assert scores["frames"] == 8
    for view in project.view_names:
        assert scores["scores"][f"{view}/pixel_error/mean"] == pytest.approx(test[f"pixel_error/{view}"], abs=1e-3)
    assert "view side:" in scores["table"]


def test_a_lightning_pose_multiview_config_yaml_loads_as_written(project, tmp_path):
    from bioloop import api
    from bioloop.errors import BioloopError

    text = f"""data:
  data_dir: {project.root}
  video_dir: {project.root}/videos
  csv_file: [CollectedData_top.csv, CollectedData_side.csv]
  view_names: [top, side]
  num_keypoints: 8
model:
  model_type: heatmap
  backbone: test_resnet
  losses_to_use: [pca_multiview]
losses:
  pca_multiview:
    log_weight: 5.0
    components_to_keep: 3
"""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    cfg = api.load_config(str(path), echo=lambda _m: None)
    assert cfg.view_names == ["top", "side"] and cfg.labels_file == ["CollectedData_top.csv", "CollectedData_side.csv"]
    assert cfg.losses_to_use == ["pca_multiview"] and api.check_config(cfg) == []
    path.write_text(text.replace("model_type: heatmap", "model_type: heatmap_multiview_transformer"))
    with pytest.raises(BioloopError, match=r"model.model_type: .*cross-view transformer is not built"):
        api.load_config(str(path), echo=lambda _m: None)


def test_synthetic_views_is_a_pose_option_only(tmp_path):
    from click.testing import CliRunner

    from bioloop.cli import cli

    result = CliRunner().invoke(cli, ["synthetic", str(tmp_path / "x"), "--layout", "tracking", "--views", "a,b"])
    assert result.exit_code != 0 and "--views makes a single-animal pose project" in result.output
    assert not (tmp_path / "x").exists()
