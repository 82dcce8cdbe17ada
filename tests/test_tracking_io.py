"""Tracking formats: SLEAP, Cell Tracking Challenge, MOTChallenge, TrackMate readers; writers; find_pairs."""

import os
import pickle
import shutil

import numpy as np
import pytest
import tifffile

from bioloop.data.synthetic_tracking import make_ctc_3d, make_tracking_dataset
from bioloop.errors import ConfigError, DataError
from bioloop.tasks.tracking.io import (check_ctc, find_pairs, instances_from_labels, read_ctc, read_ctc_tracks,
                                       read_mot, read_slp, read_trackmate, write_ctc, write_mot, write_slp)
from bioloop.tasks.tracking.types import Instances, TrackSequence, boxes_from_points


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_tracking_dataset(tmp_path_factory.mktemp("trk"), n_frames=20, seed=1, enter_leave=True)


def _seq(frames, name="hand"):
    return TrackSequence(name=name, frames=frames, read_frame=lambda t: np.zeros((8, 8, 1), np.uint8))


# ------------------------------------------------------------------ SLEAP

def test_read_slp_gives_the_generator_tracks_points_and_frames(ds):
    [seq] = read_slp(ds.slp_path)
    assert len(seq) == 20 and seq.node_names == ["head", "centroid", "tail"] and seq.image_hw == ds.image_size
    for t in (0, 10, 19):
        inst = seq.frames[t]
        ids = np.flatnonzero(ds.visible[t])
        np.testing.assert_array_equal(inst.track_ids, ids)
        np.testing.assert_allclose(inst.points, ds.points[t, ids], atol=1e-4)
        np.testing.assert_allclose(inst.boxes, boxes_from_points(inst.points, pad=2.0))
    frame = pickle.loads(pickle.dumps(seq)).read_frame(10)
    assert frame.shape == (*ds.image_size, 3) and np.abs(frame.astype(float) - ds.images[10]).mean() < 6


def test_read_slp_video_path_override_and_missing_video(ds, tmp_path):
    moved = tmp_path / "moved.slp"
    shutil.copy(ds.slp_path, moved)
    shutil.copy(ds.video_path, tmp_path / "elsewhere.mp4")
    import os
    os.rename(ds.video_path, ds.video_path + ".bak")
    try:
        [seq] = read_slp(moved)
        with pytest.raises(DataError, match="video file not found"):
            seq.read_frame(0)
        [seq] = read_slp(moved, tmp_path / "elsewhere.mp4")
        assert seq.read_frame(3).shape == (*ds.image_size, 3)
    finally:
        os.rename(ds.video_path + ".bak", ds.video_path)
    with pytest.raises(ConfigError, match="one video per video"):
        read_slp(moved, ["a.mp4", "b.mp4"])
    with pytest.raises(DataError, match="SLEAP file not found"):
        read_slp(tmp_path / "nope.slp")


def test_read_slp_prefers_user_instances_and_untracked_is_minus_one(tmp_path):
    import sleap_io as sio

    sk = sio.Skeleton(["a", "b"])
    video = sio.Video(filename=str(tmp_path / "v.mp4"), open_backend=False)
    tr = [sio.Track("x"), sio.Track("y")]
    pts = np.array([[1.0, 2.0], [3.0, 4.0]])
    pred = sio.PredictedInstance.from_numpy(pts + 10, skeleton=sk, score=0.7, track=tr[1])
    user = sio.Instance.from_numpy(pts, skeleton=sk, track=tr[1])
    lone = sio.PredictedInstance.from_numpy(pts + 20, skeleton=sk, score=0.5)
    frames = [sio.LabeledFrame(video=video, frame_idx=0, instances=[user, pred]),
              sio.LabeledFrame(video=video, frame_idx=2, instances=[pred, lone])]
    sio.save_slp(sio.Labels(frames, videos=[video], skeletons=[sk], tracks=tr), str(tmp_path / "l.slp"))
    [seq] = read_slp(tmp_path / "l.slp")
    assert len(seq) == 3 and len(seq.frames[1]) == 0
    np.testing.assert_array_equal(seq.frames[0].points, pts[None])
    assert seq.frames[0].track_ids.tolist() == [1] and seq.frames[0].scores.tolist() == [1.0]
    assert seq.frames[2].track_ids.tolist() == [1, -1]
    np.testing.assert_allclose(seq.frames[2].scores, [0.7, 0.5])
    np.testing.assert_allclose(seq.frames[2].boxes[0], [9, 10, 15, 16])  # points 11..13, 12..14 + pad 2


def test_write_slp_round_trip_keeps_ids_and_points(ds, tmp_path):
    [seq] = read_slp(ds.slp_path)
    for inst in seq.frames:  # predicted ids: a permutation, one instance unassigned in frame 4
        inst.track_ids = (inst.track_ids * 3 + 1) % 7
    seq.frames[4].track_ids[0] = -1
    out = write_slp(tmp_path / "pred.slp", seq, ds.video_path)
    [back] = read_slp(out)
    for a, b in zip(seq.frames, back.frames):
        np.testing.assert_array_equal(a.track_ids, b.track_ids)
        np.testing.assert_allclose(a.points, b.points, atol=1e-4)
    assert back.read_frame(0).shape == (*ds.image_size, 3)


def _moved_slp(src: str, dest, stored: str) -> str:
    """A copy of a .slp whose video path is ``stored`` (e.g. where it lived on another machine)."""
    import sleap_io as sio

    labels = sio.load_slp(src, open_videos=False)
    labels.videos[0].replace_filename(stored, open=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sio.save_slp(labels, str(dest), verbose=False)
    return str(dest)


def test_a_dead_video_path_uses_the_same_name_file_next_to_the_slp_and_says_so_once(ds, tmp_path, capsys):
    slp = _moved_slp(ds.slp_path, tmp_path / "moved" / "tracking.slp", "/gone/data/tracking.mp4")
    os.symlink(ds.video_path, tmp_path / "moved" / "tracking.mp4")
    [seq] = read_slp(slp)
    read_slp(slp)
    assert seq.video == str(tmp_path / "moved" / "tracking.mp4") and seq.read_frame(0).shape == (*ds.image_size, 3)
    assert capsys.readouterr().err.splitlines() == [
        f"{slp}: video /gone/data/tracking.mp4 not found; reading {tmp_path / 'moved' / 'tracking.mp4'} (same "
        "name, next to the .slp; --video remaps the path)"]


def test_video_remaps_a_file_a_folder_or_an_old_prefix(ds, tmp_path):
    folder = os.path.dirname(ds.video_path)
    slp = _moved_slp(ds.slp_path, tmp_path / "elsewhere" / "t.slp", "/gone/data/tracking.mp4")
    assert read_slp(slp)[0].video is None  # nothing next to it: frames fail when read, saying how to fix
    with pytest.raises(DataError, match=r"video file not found: /gone/data/tracking.mp4.*--video"):
        read_slp(slp)[0].read_frame(0)
    for remap in (ds.video_path, folder, f"/gone/data={folder}", f"/gone/data/={folder}/"):
        [seq] = read_slp(slp, remap)
        assert os.path.samefile(seq.video, ds.video_path), remap
        assert seq.read_frame(3).shape == (*ds.image_size, 3)
    assert read_slp(slp, "/other=/x")[0].video is None  # a prefix that does not match leaves the path
    with pytest.raises(DataError, match=r"t.slp: the video folder has no tracking.mp4"):
        read_slp(slp, str(tmp_path))
    with pytest.raises(ConfigError, match=r"t.slp: a video remap needs the old prefix before '='.*"
                                          r"--video /old/videos=/new/videos"):
        read_slp(slp, f"={folder}")


# ------------------------------------------------------------------ Cell Tracking Challenge

def test_instances_from_labels_golden():
    lab = np.zeros((5, 6), np.uint16)
    lab[1:3, 2:5] = 5  # rows 1-2, cols 2-4
    lab[4, 0] = 9
    inst = instances_from_labels(lab, 3)
    assert inst.frame == 3 and inst.track_ids.tolist() == [5, 9] and inst.mask_ids.tolist() == [5, 9]
    np.testing.assert_allclose(inst.points[:, 0], [[3.0, 1.5], [0.0, 4.0]])
    np.testing.assert_allclose(inst.boxes, [[1.5, 0.5, 4.5, 2.5], [-0.5, 3.5, 0.5, 4.5]])
    assert inst.z is None


def test_read_ctc_tracks_golden_and_bad_line(tmp_path):
    (tmp_path / "man_track.txt").write_text("1 0 4 0\n2 5 9 1\n\n3 5 7 1\n")
    np.testing.assert_array_equal(read_ctc_tracks(tmp_path / "man_track.txt"),
                                  [[1, 0, 4, 0], [2, 5, 9, 1], [3, 5, 7, 1]])
    (tmp_path / "bad.txt").write_text("1 0 4 0\n2 5 x\n")
    with pytest.raises(DataError, match=r"bad.txt:2: expected 4 integers"):
        read_ctc_tracks(tmp_path / "bad.txt")


def test_read_ctc_matches_the_generator_from_every_entry_point(ds):
    seq, table = read_ctc(ds.ctc_root)
    np.testing.assert_array_equal(table, ds.ctc_table)
    assert len(seq) == 20 and seq.ndim == 2 and seq.image_hw == ds.image_size
    for t in (0, 9, 19):
        ids = np.flatnonzero(ds.visible[t])
        np.testing.assert_array_equal(seq.frames[t].track_ids, ids + 1)
        np.testing.assert_array_equal(seq.frames[t].mask_ids, ids + 1)
        inner = [k for k, i in enumerate(ids) if i < len(ds.ids) - 1]  # the newcomer may sit on the border
        np.testing.assert_allclose(seq.frames[t].points[inner, 0], ds.positions[t, ids[inner]], atol=0.3)
    assert seq.read_frame(0).shape == (*ds.image_size, 1) and seq.read_labels(0).shape == ds.image_size
    for entry in (ds.ctc_raw_dir, ds.ctc_tra_dir, f"{ds.ctc_tra_dir}/.."):
        other, _ = read_ctc(entry)
        assert [f.track_ids.tolist() for f in other.frames] == [f.track_ids.tolist() for f in seq.frames]


def test_read_ctc_3d(tmp_path):
    d3 = make_ctc_3d(tmp_path, n_frames=6, n_objects=2)
    seq, table = read_ctc(tmp_path, sequence="01")
    np.testing.assert_array_equal(table, d3.table)
    assert seq.ndim == 3 and seq.read_frame(0).shape == d3.shape and seq.read_labels(5).shape == d3.shape
    inst = seq.frames[4]
    assert inst.track_ids.tolist() == [2, 3, 4]
    np.testing.assert_allclose(np.c_[inst.points[:, 0], inst.z], d3.positions[4, 1:], atol=0.35)


def test_read_ctc_errors(tmp_path):
    with pytest.raises(DataError, match="CTC folder not found"):
        read_ctc(tmp_path / "missing")
    (tmp_path / "01").mkdir()
    (tmp_path / "02").mkdir()
    with pytest.raises(ConfigError, match="cannot tell which sequence"):
        read_ctc(tmp_path)
    with pytest.raises(DataError, match="label folder not found"):
        read_ctc(tmp_path, sequence="01", gt=False)


def test_write_ctc_round_trip_and_check(ds, tmp_path):
    seq, _ = read_ctc(ds.ctc_root)
    for inst in seq.frames:  # predicted ids: 0-based, reversed
        inst.track_ids = len(ds.ids) - inst.mask_ids
    table = write_ctc(tmp_path / "01_RES", seq)
    assert check_ctc(tmp_path / "01_RES") == []
    assert tifffile.imread(tmp_path / "01_RES" / "mask000.tif").dtype == np.uint16
    back, read_table = read_ctc(tmp_path / "01_RES")
    np.testing.assert_array_equal(read_table, table)
    for a, b in zip(seq.frames, back.frames):
        order = np.argsort(a.track_ids)
        np.testing.assert_array_equal(b.track_ids, a.track_ids[order] + 1)
        np.testing.assert_allclose(b.points, a.points[order])


def _gap_sequence():
    """Track 0 in frames 0, 1, 3 (gap at 2); track 4 in frames 0..3; masks 1 and 2."""
    masks = np.zeros((4, 6, 6), np.uint16)
    masks[[0, 1, 3], 1, 1] = 1
    masks[:, 4, 4] = 2
    frames = []
    for t in range(4):
        inst = instances_from_labels(masks[t], t)
        inst.track_ids = np.where(inst.mask_ids == 1, 0, 4)
        frames.append(inst)
    return _seq(frames), masks


def test_a_track_with_a_gap_becomes_two_labels_with_a_parent_link(tmp_path):
    seq, masks = _gap_sequence()
    table = write_ctc(tmp_path, seq, lambda t: masks[t])
    np.testing.assert_array_equal(table, [[1, 0, 1, 0], [5, 0, 3, 0], [6, 3, 3, 1]])
    assert tifffile.imread(tmp_path / "mask003.tif")[1, 1] == 6
    assert check_ctc(tmp_path) == []


def test_write_ctc_widens_to_uint32_and_refuses_bad_input(tmp_path):
    seq, masks = _gap_sequence()
    for inst in seq.frames:
        inst.track_ids = np.where(inst.mask_ids == 1, 70000, 4)
    write_ctc(tmp_path / "a", seq, lambda t: masks[t])
    assert tifffile.imread(tmp_path / "a" / "mask000.tif").dtype == np.uint32
    assert check_ctc(tmp_path / "a") == []
    with pytest.raises(DataError, match=r"frame 0: mask ids \[1, 2\] of its instances are not in the label image"):
        write_ctc(tmp_path / "b", seq, lambda t: np.zeros((6, 6), np.uint16))
    plain = _seq([Instances(frame=0, points=np.zeros((1, 1, 2)), boxes=np.zeros((1, 4)), track_ids=[0])])
    with pytest.raises(DataError, match="without mask_ids"):
        write_ctc(tmp_path / "c", plain, lambda t: np.zeros((6, 6), np.uint16))


def test_check_ctc_finds_hand_made_inconsistencies(tmp_path):
    masks = np.zeros((3, 4, 4), np.uint16)
    masks[0, 0, 0] = masks[2, 0, 0] = 1  # label 1 missing from frame 1
    masks[:, 3, 3] = 2  # label 2 not listed
    masks[1:, 2, 2] = 3  # label 3: parent 4 does not end before it begins
    masks[:, 1, 1] = 4
    for t in range(3):
        tifffile.imwrite(tmp_path / f"mask{t:03d}.tif", masks[t])
    (tmp_path / "res_track.txt").write_text("1 0 2 0\n3 1 2 4\n4 0 2 0\n0 0 0 0\n")
    problems = "\n".join(check_ctc(tmp_path))
    assert "label 1 is listed for frames 0..2 but missing from frames [1]" in problems
    assert "mask label 2 (frames 0..2) is not listed" in problems
    assert "parent 4 of label 3 ends at frame 2, not before its child begins (1)" in problems
    assert "label 0 must be > 0" in problems
    assert check_ctc(tmp_path / "nothing") == [f"{tmp_path / 'nothing'}: no res_track.txt or man_track.txt"]


# ------------------------------------------------------------------ MOTChallenge

def test_read_mot_golden_box_conversion(tmp_path):
    txt = tmp_path / "res.txt"
    txt.write_text("1,3,10,20,5,6,0.9,-1,-1,-1\n3,4,0.5,1.5,2,2,1,-1,-1,-1\n1,7,1,1,1,1\n")
    seq = read_mot(txt)
    assert len(seq) == 3 and len(seq.frames[1]) == 0
    np.testing.assert_allclose(seq.frames[0].boxes, [[9.5, 19.5, 14.5, 25.5], [0.5, 0.5, 1.5, 1.5]])
    np.testing.assert_allclose(seq.frames[0].points[:, 0], [[12.0, 22.5], [1.0, 1.0]])
    np.testing.assert_allclose(seq.frames[0].scores, [0.9, 1.0])
    assert seq.frames[0].track_ids.tolist() == [3, 7] and seq.frames[2].track_ids.tolist() == [4]
    np.testing.assert_allclose(seq.frames[2].boxes, [[0.0, 1.0, 2.0, 3.0]])
    with pytest.raises(DataError, match="no images for this sequence"):
        seq.read_frame(0)


def test_read_mot_errors(tmp_path):
    (tmp_path / "a.txt").write_text("1,3,10,20\n")
    with pytest.raises(DataError, match=r"a.txt:1: expected 'frame,id"):
        read_mot(tmp_path / "a.txt")
    (tmp_path / "b.txt").write_text("0,3,10,20,5,6\n")
    with pytest.raises(DataError, match="frame numbers are integers starting at 1"):
        read_mot(tmp_path / "b.txt")
    with pytest.raises(DataError, match="MOT file not found"):
        read_mot(tmp_path / "c.txt")
    (tmp_path / "d.txt").write_text("1,3,10,20,5,6\nnan,3,10,20,5,6\n")
    with pytest.raises(DataError, match=r"d.txt:2: frame, id and box must be finite numbers \(got 'nan,3"):
        read_mot(tmp_path / "d.txt")
    (tmp_path / "e.txt").write_text("1,3,10,20,5,6\n\n2.5,3,10,20,5,6\n")
    with pytest.raises(DataError, match=r"e.txt:3: frame numbers are integers starting at 1 \(got '2.5'\)"):
        read_mot(tmp_path / "e.txt")


def test_read_mot_generator_and_write_mot_round_trip(ds, tmp_path):
    seq = read_mot(ds.mot_txt)
    assert seq.name == "SYN-01" and len(seq) == 20 and seq.image_hw == ds.image_size
    t = 7
    ids = np.flatnonzero(ds.visible[t])
    np.testing.assert_array_equal(seq.frames[t].track_ids, ids + 1)
    np.testing.assert_allclose(seq.frames[t].boxes, ds.boxes[t, ids])
    assert np.abs(seq.read_frame(t).astype(float) - ds.images[t]).mean() < 4  # jpg
    out = write_mot(tmp_path / "x.txt", seq)
    assert open(out).readline() == open(ds.mot_txt).readline()
    back = read_mot(out, ds.mot_img_dir)
    for a, b in zip(seq.frames, back.frames):
        np.testing.assert_array_equal(a.track_ids, b.track_ids)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


def test_write_mot_golden_and_skips_unassigned(tmp_path):
    inst = Instances(frame=0, points=np.zeros((2, 1, 2)), boxes=[[9.5, 19.5, 14.5, 25.5], [0, 0, 1, 1]],
                     track_ids=[3, -1], scores=[0.9, 1.0])
    empty = Instances(frame=1, points=np.zeros((0, 1, 2)), boxes=np.zeros((0, 4)), track_ids=[])
    out = write_mot(tmp_path / "m.txt", _seq([empty, inst]))
    assert out.read_text() == "2,3,10,20,5,6,0.9,-1,-1,-1\n"


# ------------------------------------------------------------------ TrackMate

_TM_HEADER = "LABEL,ID,TRACK_ID,QUALITY,POSITION_X,POSITION_Y,POSITION_Z,FRAME,RADIUS\n"
_TM_EXTRA = ("Label,Spot ID,Track ID,Quality,X,Y,Z,Frame,Radius\n"
             "Label,Spot ID,Track ID,Quality,X,Y,Z,Frame,R\n"
             ",,,(quality),(micron),(micron),(micron),,(micron)\n")
_TM_ROWS = "ID1,1,0,5.0,10.0,20.0,0.0,0,2.5\nID2,2,,5.0,4.0,6.0,0.0,1,\nID3,3,1,5.0,8.0,8.0,0.0,1,1.0\n"


@pytest.mark.parametrize("extra", ["", _TM_EXTRA])
def test_read_trackmate_with_and_without_extra_header_rows(tmp_path, extra):
    path = tmp_path / "spots.csv"
    path.write_text(_TM_HEADER + extra + _TM_ROWS)
    seq = read_trackmate(path, radius=3.0, pixel_size=2.0)
    assert len(seq) == 2 and seq.ndim == 2
    np.testing.assert_allclose(seq.frames[0].points[:, 0], [[5.0, 10.0]])
    np.testing.assert_allclose(seq.frames[0].boxes, [[3.75, 8.75, 6.25, 11.25]])  # radius 2.5 / 2
    assert seq.frames[1].track_ids.tolist() == [-1, 1]
    np.testing.assert_allclose(seq.frames[1].boxes, [[-1, 0, 5, 6], [3.5, 3.5, 4.5, 4.5]])  # default radius 3


def test_read_trackmate_frames_and_errors(tmp_path):
    stack = np.arange(2 * 4 * 5, dtype=np.uint16).reshape(2, 4, 5)
    tifffile.imwrite(tmp_path / "movie.tif", stack)
    (tmp_path / "spots.csv").write_text(_TM_HEADER + _TM_ROWS)
    seq = read_trackmate(tmp_path / "spots.csv", tmp_path / "movie.tif")
    np.testing.assert_array_equal(seq.read_frame(1)[..., 0], stack[1])
    assert seq.image_hw == (4, 5)
    (tmp_path / "bad.csv").write_text("TRACK_ID,FRAME,X\n0,0,1\n")
    with pytest.raises(DataError, match=r"missing TrackMate columns \['POSITION_X', 'POSITION_Y'\]"):
        read_trackmate(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text(_TM_HEADER + _TM_ROWS + "ID9,9,0,5.0,abc,1,0,2,1\n")
    with pytest.raises(DataError, match="must be numbers"):
        read_trackmate(tmp_path / "bad2.csv")


# ------------------------------------------------------------------ dir section

def test_find_pairs_pairs_by_stem_and_lists_the_lonely(tmp_path):
    for name in ("b.slp", "b.mp4", "a.slp", "a.mp4", "notes.txt"):
        (tmp_path / name).write_text("")
    assert find_pairs(tmp_path, ".slp", ".mp4") == [(str(tmp_path / "a.slp"), str(tmp_path / "a.mp4")),
                                                    (str(tmp_path / "b.slp"), str(tmp_path / "b.mp4"))]
    (tmp_path / "c.slp").write_text("")
    (tmp_path / "d.mp4").write_text("")
    with pytest.raises(DataError, match=r"dataset.dir.path: files without a partner .*\['c.slp', 'd.mp4'\]"):
        find_pairs(tmp_path, ".slp", ".mp4", where="dataset.dir")
    with pytest.raises(ConfigError, match="need different suffixes"):
        find_pairs(tmp_path, ".slp", ".slp")
    with pytest.raises(ConfigError, match="must be a non-empty file suffix"):
        find_pairs(tmp_path, "", ".mp4")
    with pytest.raises(DataError, match="folder not found"):
        find_pairs(tmp_path / "x", ".slp", ".mp4")
    with pytest.raises(DataError, match="no '\\*.h5' or '\\*.avi' files"):
        find_pairs(tmp_path, ".h5", ".avi")


def test_write_ctc_parents_link_daughters_to_the_mother(tmp_path):
    masks = np.zeros((4, 6, 6), np.uint16)
    masks[:2, 2, 2] = 1
    masks[2:, 1, 1] = 2
    masks[2:, 4, 4] = 3
    frames = [instances_from_labels(m, t) for t, m in enumerate(masks)]
    for f in frames:
        f.track_ids = f.mask_ids - 1  # tracks 0, 1, 2
    table = write_ctc(tmp_path, _seq(frames), lambda t: masks[t], parents={1: 0, 2: 0})
    np.testing.assert_array_equal(table, [[1, 0, 1, 0], [2, 2, 3, 1], [3, 2, 3, 1]])
    assert check_ctc(tmp_path) == []
    seq, _ = read_ctc(tmp_path)
    assert pickle.loads(pickle.dumps(seq)).read_labels(3)[4, 4] == 3


def test_read_ctc_takes_raw_frames_and_the_track_table_from_elsewhere(ds, tmp_path):
    import shutil

    labels = tmp_path / "masks"
    shutil.copytree(ds.ctc_tra_dir, labels)
    table_file = tmp_path / "tables" / "gt.txt"
    table_file.parent.mkdir()
    (labels / "man_track.txt").rename(table_file)
    frames = tmp_path / "frames"
    shutil.copytree(ds.ctc_raw_dir, frames)
    seq, table = read_ctc(labels, raw=frames, track_file=table_file)
    np.testing.assert_array_equal(table, ds.ctc_table)
    assert seq.read_frame(3).shape == (*ds.image_size, 1)
    with pytest.raises(DataError):
        read_ctc(labels)  # without gt_list the table is missing
