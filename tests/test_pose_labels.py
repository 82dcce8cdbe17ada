"""Reading and writing keypoint label files (DLC CSV / .h5, SLEAP .slp)."""

import numpy as np
import pandas as pd
import pytest

from bioloop.errors import ConfigError, DataError
from bioloop.tasks.pose.labels import (PoseLabels, check_keypoints, read_dlc_csv, read_dlc_h5,
                                       read_labels, read_slp, write_dlc_csv)

NAN = np.nan
VALUES = [[1.0, 2.0, NAN, NAN], [5.0, 6.0, 7.5, 8.0]]  # nose x, y, tail x, y
FILES = ["labeled-data/vid1/img000.png", "labeled-data/vid1/img001.png"]


def _single_df(index) -> pd.DataFrame:
    cols = pd.MultiIndex.from_product([["alice"], ["nose", "tail"], ["x", "y"]],
                                      names=["scorer", "bodyparts", "coords"])
    return pd.DataFrame(VALUES, index=index, columns=cols)


def _assert_single(labels: PoseLabels, root):
    assert labels.keypoint_names == ["nose", "tail"]
    assert labels.keypoints.shape == (2, 1, 2, 2) and labels.keypoints.dtype == np.float32
    np.testing.assert_array_equal(labels.keypoints[:, 0], np.reshape(VALUES, (2, 2, 2)))
    assert labels.image_paths == [str(root / f) for f in FILES]
    assert labels.individuals == ["animal"] and not labels.is_multi_animal
    assert labels.scorer == "alice" and labels.visible is None


def test_csv_with_path_in_first_column(tmp_path):
    _single_df(FILES).to_csv(tmp_path / "CollectedData.csv")
    _assert_single(read_dlc_csv(tmp_path / "CollectedData.csv"), tmp_path)


def test_csv_with_path_split_over_three_columns(tmp_path):
    (tmp_path / "labels.csv").write_text(
        "scorer,,,alice,alice,alice,alice\n"
        "bodyparts,,,nose,nose,tail,tail\n"
        "coords,,,x,y,x,y\n"
        "labeled-data,vid1,img000.png,1,2,,\n"
        "labeled-data,vid1,img001.png,5,6,7.5,8\n")
    labels = read_labels(tmp_path / "labels.csv")
    _assert_single(labels, tmp_path)
    assert labels.groups() == [str(tmp_path / "labeled-data/vid1")] * 2


def test_csv_from_pandas_with_multiindex_rows(tmp_path):
    index = pd.MultiIndex.from_tuples([tuple(f.split("/")) for f in FILES])
    _single_df(index).to_csv(tmp_path / "labels.csv")
    _assert_single(read_dlc_csv(tmp_path / "labels.csv"), tmp_path)


def test_csv_index_names_row_is_skipped_but_an_unlabeled_frame_is_kept(tmp_path):
    (tmp_path / "labels.csv").write_text(
        "scorer,,,alice,alice\nbodyparts,,,nose,nose\ncoords,,,x,y\n"
        "a,b,c,,\nlabeled-data,vid1,img000.png,,\nlabeled-data,vid1,img001.png,3,4\n")
    labels = read_dlc_csv(tmp_path / "labels.csv")
    assert labels.num_frames == 2 and np.isnan(labels.keypoints[0]).all()


def test_dlc_project_layout_resolves_against_the_project_root(tmp_path):
    folder = tmp_path / "labeled-data" / "vid1"
    folder.mkdir(parents=True)
    (folder / "img000.png").write_bytes(b"")
    _single_df(FILES).to_csv(folder / "CollectedData_alice.csv")
    labels = read_dlc_csv(folder / "CollectedData_alice.csv")
    assert labels.image_paths[0] == str(tmp_path / FILES[0])


def test_multi_animal_csv_with_unique_bodypart_and_visible(tmp_path):
    (tmp_path / "ma.csv").write_text(
        "scorer,,,bob,bob,bob,bob,bob,bob,bob,bob,bob\n"
        "individuals,,,mouse1,mouse1,mouse1,mouse2,mouse2,mouse2,single,single,single\n"
        "bodyparts,,,nose,nose,nose,nose,nose,nose,led,led,led\n"
        "coords,,,x,y,visible,x,y,visible,x,y,visible\n"
        "labeled-data,v,a.png,1,2,1,3,4,0,9,9,True\n"
        "labeled-data,v,b.png,,,,5,6,1,,,\n")
    labels = read_dlc_csv(tmp_path / "ma.csv")
    assert labels.individuals == ["mouse1", "mouse2", "single"]
    assert labels.keypoint_names == ["nose", "led"]
    assert labels.keypoints.shape == (2, 3, 2, 2) and labels.is_multi_animal
    np.testing.assert_array_equal(labels.keypoints[0, :, 0], [[1, 2], [3, 4], [NAN, NAN]])
    np.testing.assert_array_equal(labels.keypoints[0, 2, 1], [9, 9])
    assert np.isnan(labels.keypoints[1, 0]).all() and np.isnan(labels.keypoints[:, :2, 1]).all()
    np.testing.assert_array_equal(labels.visible[0, :, 0], [True, False, False])
    assert labels.visible[0, 2, 1] and labels.visible[1, 1, 0]


def test_csv_likelihood_and_integer_index_are_a_prediction_file(tmp_path):
    (tmp_path / "pred.csv").write_text(
        "scorer,net,net,net\nbodyparts,nose,nose,nose\ncoords,x,y,likelihood\n"
        "0,1.5,2.5,0.9\n7,3,4,0.2\n")
    labels = read_dlc_csv(tmp_path / "pred.csv")
    assert labels.image_paths == ["", ""]
    np.testing.assert_array_equal(labels.frame_indices, [0, 7])
    np.testing.assert_allclose(labels.likelihood[:, 0, 0], [0.9, 0.2])


@pytest.mark.parametrize("text, message", [
    ("a,b\n1,2\n", "no 'coords' header row"),
    ("scorer,s,s\nbodyparts,n,n\ncoords,x,z\nimg.png,1,2\n", "unknown coords entry"),
    ("scorer,s,s\nbodyparts,n,n\ncoords,x,y\nimg.png,1,oops\n", "row 4: not a number"),
])
def test_malformed_csv_is_a_data_error(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_dlc_csv(tmp_path / "bad.csv")
    assert str(tmp_path / "bad.csv") in str(err.value)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="label file not found"):
        read_labels(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="unknown label file type.*'.json'"):
        read_labels(tmp_path / "labels.json")


def test_h5_reader(tmp_path):
    _single_df(FILES).to_hdf(tmp_path / "CollectedData.h5", key="df_with_missing")
    _assert_single(read_labels(tmp_path / "CollectedData.h5"), tmp_path)
    # another single key is found by itself; a wrong key names the keys there are
    index = pd.MultiIndex.from_tuples([tuple(f.split("/")) for f in FILES])
    _single_df(index).to_hdf(tmp_path / "other.h5", key="keypoints")
    _assert_single(read_dlc_h5(tmp_path / "other.h5"), tmp_path)
    with pytest.raises(DataError, match="no table 'x'.*'keypoints'"):
        read_dlc_h5(tmp_path / "other.h5", key="x")


def test_h5_multi_animal(tmp_path):
    cols = pd.MultiIndex.from_product([["s"], ["m1", "m2"], ["nose"], ["x", "y"]],
                                      names=["scorer", "individuals", "bodyparts", "coords"])
    pd.DataFrame([[1, 2, NAN, NAN]], index=["a.png"], columns=cols).to_hdf(
        tmp_path / "ma.h5", key="df_with_missing")
    labels = read_dlc_h5(tmp_path / "ma.h5")
    assert labels.individuals == ["m1", "m2"] and labels.keypoints.shape == (1, 2, 1, 2)
    assert np.isnan(labels.keypoints[0, 1]).all()


def _slp(tmp_path, tracked=False):
    import cv2
    import sleap_io as sio

    sk = sio.Skeleton(["head", "tail"])
    tracks = [sio.Track("t0"), sio.Track("t1")] if tracked else []
    video = sio.Video(filename=str(tmp_path / "vid.mp4"), open_backend=False)
    for name in ("a.png", "b.png"):  # an image-sequence video must exist to be saved
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8), np.uint8))
    images = sio.Video.from_filename([str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    pred = sio.PredictedInstance.from_numpy(np.array([[7.0, 8], [9, 10]]), skeleton=sk,
                                            point_scores=np.array([0.5, 0.25]), score=0.4)
    user = sio.Instance.from_numpy(np.array([[1.0, 2], [NAN, NAN]]), skeleton=sk,
                                   track=tracks[1] if tracked else None)
    frames = [sio.LabeledFrame(video=video, frame_idx=12, instances=[user, pred]),
              sio.LabeledFrame(video=images, frame_idx=1, instances=[
                  sio.Instance.from_numpy(np.array([[3.0, 4], [5, 6]]), skeleton=sk,
                                          track=tracks[0] if tracked else None)]),
              sio.LabeledFrame(video=video, frame_idx=13, instances=[
                  sio.PredictedInstance.from_numpy(np.array([[1.0, 1], [2, 2]]), skeleton=sk)])]
    path = tmp_path / "labels.slp"
    sio.save_slp(sio.Labels(frames, tracks=tracks), str(path))
    return path


def test_slp_user_instances(tmp_path):
    labels = read_slp(_slp(tmp_path))
    assert labels.keypoint_names == ["head", "tail"] and labels.num_frames == 2
    assert labels.keypoints.shape == (2, 1, 2, 2)
    np.testing.assert_array_equal(labels.keypoints[:, 0], [[[1, 2], [NAN, NAN]], [[3, 4], [5, 6]]])
    np.testing.assert_array_equal(labels.visible[:, 0], [[True, False], [True, True]])
    assert labels.video_paths == [str(tmp_path / "vid.mp4"), ""]
    assert labels.image_paths == ["", str(tmp_path / "b.png")]
    np.testing.assert_array_equal(labels.frame_indices, [12, 1])
    assert labels.likelihood is None


def test_slp_with_predictions_and_tracks(tmp_path):
    labels = read_slp(_slp(tmp_path), include_predicted=True)
    assert labels.num_frames == 3 and labels.individuals == ["animal0", "animal1"]
    np.testing.assert_array_equal(labels.keypoints[0, 1], [[7, 8], [9, 10]])
    np.testing.assert_allclose(labels.likelihood[0, 1], [0.5, 0.25])
    np.testing.assert_allclose(labels.likelihood[0, 0], [1.0, NAN])  # user point
    tracked = read_slp(_slp(tmp_path, tracked=True))
    assert tracked.individuals == ["t0", "t1"]
    np.testing.assert_array_equal(tracked.keypoints[0, 1, 0], [1, 2])  # slotted by track
    assert np.isnan(tracked.keypoints[0, 0]).all()


def _labels(names=("nose", "tail", "paw")) -> PoseLabels:
    return PoseLabels(keypoints=np.arange(6 * len(names)).reshape(3, 1, len(names), 2),
                      keypoint_names=list(names), image_paths=["a", "b", "c"],
                      source="data/CollectedData.csv")


def test_check_keypoints_reorders_to_the_config():
    out = check_keypoints(_labels(), ["paw", "nose", "tail"], 3)
    assert out.keypoint_names == ["paw", "nose", "tail"]
    np.testing.assert_array_equal(out.keypoints[:, :, 0], _labels().keypoints[:, :, 2])
    assert check_keypoints(_labels()).keypoint_names == ["nose", "tail", "paw"]


@pytest.mark.parametrize("names, count, message", [
    (["nsoe", "tail", "paw"], None,
     r"train.py: keypoint_names has 'nsoe', which is not a keypoint in "
     r"data/CollectedData.csv \(did you mean 'nose'\?\)"),
    (None, 4, r"train.py: num_keypoints does not match the 3 keypoints in "
              r"data/CollectedData.csv \(nose, tail, paw\) \(got 4\); set num_keypoints = 3"),
    (["nose", "tail"], None, r"keypoint_names misses keypoint\(s\) of .* \(got \['paw'\]\)"),
    (["nose", "nose", "paw"], None, r"keypoint_names repeats a name \(got \['nose'\]\)"),
    (["nose", "tail"], 3, r"keypoint_names lists 2 names but num_keypoints is 3"),
])
def test_check_keypoints_errors(names, count, message):
    with pytest.raises(ConfigError, match=message):
        check_keypoints(_labels(), names, count, where="train.py")


def test_write_dlc_csv_round_trip_single(tmp_path):
    labels = read_dlc_csv(_write_source(tmp_path))
    like = np.array([[[0.9, NAN]], [[0.8, 0.7]]])
    out = write_dlc_csv(tmp_path / "pred.csv", labels, likelihood=like)
    df = pd.read_csv(out, header=[0, 1, 2], index_col=0)
    assert list(df.columns.names) == ["scorer", "bodyparts", "coords"]
    np.testing.assert_allclose(df[("bioloop", "tail", "likelihood")], [NAN, 0.7])
    assert list(df.index) == FILES
    back = read_dlc_csv(out)
    np.testing.assert_array_equal(back.keypoints, labels.keypoints)
    np.testing.assert_allclose(back.likelihood, like)
    assert back.image_paths == labels.image_paths


def _write_source(tmp_path):
    _single_df(FILES).to_csv(tmp_path / "CollectedData.csv")
    return tmp_path / "CollectedData.csv"


def test_write_dlc_csv_multi_animal_arrays(tmp_path):
    xy = np.arange(2 * 2 * 3 * 2, dtype=float).reshape(2, 2, 3, 2)
    xy[1, 0, 2] = NAN
    out = write_dlc_csv(tmp_path / "sub" / "ma.csv", xy, keypoint_names=["a", "b", "c"],
                        likelihood=np.full((2, 2, 3), 0.5), frame_indices=[10, 11])
    df = pd.read_csv(out, header=[0, 1, 2, 3], index_col=0)
    assert list(df.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    assert df[("bioloop", "animal1", "c", "y")].tolist() == [11.0, 23.0]
    assert list(df.index) == [10, 11]
    back = read_dlc_csv(out)
    np.testing.assert_array_equal(back.keypoints, xy)
    np.testing.assert_array_equal(back.frame_indices, [10, 11])
    with pytest.raises(ValueError, match="keypoint_names"):
        write_dlc_csv(tmp_path / "x.csv", xy)
