"""CTC folders on the command line: evaluate checks both sides and scores every sequence,
`bioloop ctc-fix` repairs labels reused across gaps, other mask names need --mask-pattern."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from bioloop.cli import cli
from bioloop.tasks.tracking.ctc_tools import fix_ctc
from bioloop.tasks.tracking.io_ctc import check_ctc, read_ctc_tracks
from bioloop.tasks.tracking.metrics_ctc import ctc_scores
from tests.test_tracking_ctc_reference import GT, _case, _write


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture()
def cfg(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text("task = 'tracking'\n")
    return path


def test_evaluate_scores_every_sequence_of_a_ctc_root(tmp_path, cfg):
    for seq, name in (("01", "swap"), ("02", "missed_tracks")):
        gt, res, sizes = _case(name)
        _write(tmp_path / "gt" / f"{seq}_GT" / "TRA", gt, gt=True)
        _write(tmp_path / "res" / f"{seq}_RES", res, gt=False, sizes=sizes)
    report = tmp_path / "r.json"
    result = _run("evaluate", cfg, "--prediction", tmp_path / "res", "--truth", tmp_path / "gt", "--report", report)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert set(data["sequences"]) == {"01", "02"}
    for seq in ("01", "02"):
        alone = ctc_scores(tmp_path / "gt" / f"{seq}_GT" / "TRA", tmp_path / "res" / f"{seq}_RES")
        assert data["sequences"][seq]["TRA"] == pytest.approx(alone["TRA"], abs=1e-12)
    assert data["metrics"]["TRA"] == pytest.approx(np.mean([data["sequences"][s]["TRA"] for s in ("01", "02")]))
    assert "OVERALL" in result.output and "not computed: SEG" in result.output
    assert "DET/TRA and the CTC measures by mask overlap" in result.output
    masks = _run("evaluate", cfg, "--prediction", tmp_path / "res" / "01_RES", "--truth",
                 tmp_path / "gt" / "01_GT", "--match", "mask")
    assert masks.exit_code == 0, masks.output
    assert "num_switches" in masks.output and "HOTA" in masks.output


def test_evaluate_refuses_invalid_ctc_and_ctc_fix_repairs_it(tmp_path, cfg):
    gt, res, _ = _case("identical")
    _write(tmp_path / "01_GT" / "TRA", gt, gt=True)
    _write(tmp_path / "01_RES", res, gt=False)
    import tifffile

    # label 101 (GT 1 relabelled) is missing at frame 3 and comes back; the table still says 101 0 7 0
    m = tifffile.imread(tmp_path / "01_RES" / "mask003.tif")
    m[m == 101] = 0
    tifffile.imwrite(tmp_path / "01_RES" / "mask003.tif", m)
    result = _run("evaluate", cfg, "--prediction", tmp_path / "01_RES", "--truth", tmp_path / "01_GT")
    assert result.exit_code == 1
    assert "label 101 is listed for frames 0..7 but missing from frames [3]" in result.output
    assert "bioloop ctc-fix" in result.output and "Traceback" not in result.output

    fixed = tmp_path / "fixed"
    result = _run("ctc-fix", tmp_path / "01_RES", fixed)
    assert result.exit_code == 0, result.output
    assert "label 101 comes back after a gap 1 time(s): new labels [115]" in result.output
    assert check_ctc(fixed) == []
    table = {int(r[0]): r.tolist() for r in read_ctc_tracks(fixed / "res_track.txt")}
    assert table[101] == [101, 0, 2, 0] and table[115] == [115, 4, 7, 101]
    assert table[103][3] == 102 and table[104][3] == 102  # untouched lineage
    scored = _run("evaluate", cfg, "--prediction", fixed, "--truth", tmp_path / "01_GT")
    assert scored.exit_code == 0, scored.output
    s = ctc_scores(tmp_path / "01_GT" / "TRA", fixed)
    # the missed object (FN), the two GT edges around it (EA), and the link 101 -> 115 that skips it (ED)
    assert (s["FN"], s["EA"], s["ED"], s["EC"]) == (1, 2, 1, 0)
    with pytest.raises(Exception, match="already exists and is not empty"):
        fix_ctc(tmp_path / "01_RES", fixed)


def test_ctc_fix_keeps_lineage_at_the_segment_before_the_child(tmp_path):
    spec = {k: v for k, v in GT.items()}
    _write(tmp_path / "in", spec, gt=False)
    import tifffile

    # parent 2 (frames 0..3) also shows up again at frame 6: its children (born at 4) keep segment 2
    m = tifffile.imread(tmp_path / "in" / "mask006.tif")
    m[0:4, 60:64] = 2
    tifffile.imwrite(tmp_path / "in" / "mask006.tif", m)
    lines = []
    report = fix_ctc(tmp_path / "in", tmp_path / "out", say=lines.append)
    assert report["split"] == {2: [15]} and report["parents_dropped"] == {}
    table = {int(r[0]): r.tolist() for r in read_ctc_tracks(tmp_path / "out" / "res_track.txt")}
    assert table[2] == [2, 0, 3, 0] and table[15] == [15, 6, 6, 2] and table[3][3] == 2 and table[4][3] == 2
    assert check_ctc(tmp_path / "out") == [] and len(lines) == 1


def test_other_mask_names_need_mask_pattern(tmp_path, cfg):
    gt, res, _ = _case("false_positive_tracks")
    _write(tmp_path / "01_GT" / "TRA", gt, gt=True)
    _write(tmp_path / "01_RES", res, gt=False)
    for f in sorted((tmp_path / "01_RES").glob("mask*.tif")):
        f.rename(f.with_name(f"frame_{int(f.stem[4:]):04d}.tif"))
    result = _run("evaluate", cfg, "--prediction", tmp_path / "01_RES", "--truth", tmp_path / "01_GT")
    assert result.exit_code == 1
    assert "no mask files named maskTTT.tif (the Cell Tracking Challenge names) (got ['frame_0000.tif'" \
        in result.output and "--mask-pattern 'frame_*.tif' to bioloop evaluate" in result.output
    renamed = _run("ctc-fix", tmp_path / "01_RES", tmp_path / "renamed", "--mask-pattern", "frame_*.tif")
    assert renamed.exit_code == 0, renamed.output
    assert sorted(p.name for p in (tmp_path / "renamed").iterdir())[:2] == ["mask000.tif", "mask001.tif"]
    assert _run("evaluate", cfg, "--prediction", tmp_path / "renamed", "--truth", tmp_path / "01_GT").exit_code == 0
    # --mask-pattern names the masks of both folders
    for f in sorted((tmp_path / "01_GT" / "TRA").glob("man_track*.tif")):
        f.rename(f.with_name(f"frame_{int(f.stem[9:]):04d}.tif"))
    result = _run("evaluate", cfg, "--prediction", tmp_path / "01_RES", "--truth", tmp_path / "01_GT",
                  "--mask-pattern", "frame_*.tif")
    assert result.exit_code == 0, result.output
    expect = ctc_scores(tmp_path / "01_GT" / "TRA", tmp_path / "01_RES", pattern="frame_*.tif")
    assert expect["FP"] == 7 and f"{expect['TRA']:.4f}" in result.output


def test_untracked_predictions_count_or_are_excluded_with_a_count(tmp_path, cfg):
    gt = tmp_path / "gt.txt"
    gt.write_text("".join(f"{t},{k},{10 + 40 * k},10,20,20,1,-1,-1,-1\n" for t in (1, 2, 3) for k in (1, 2)))
    pred = tmp_path / "pred.csv"  # TrackMate: a spot without TRACK_ID is untracked
    rows = [f"{k},{t - 1},{19.5 + 40 * k},19.5,10" for t in (1, 2, 3) for k in (1, 2)] + [",1,300,300,10"]
    pred.write_text("TRACK_ID,FRAME,POSITION_X,POSITION_Y,RADIUS\n" + "\n".join(rows) + "\n")
    counted = _run("evaluate", cfg, "--prediction", pred, "--truth", gt, "-s",
                   "runner.metrics.test=['num_false_positives','mota']")
    assert counted.exit_code == 0, counted.output
    assert "1 untracked predicted instance(s) counted as one-frame tracks" in counted.output
    assert re.search(r"num_false_positives\s+1\n", counted.output)
    excluded = _run("evaluate", cfg, "--prediction", pred, "--truth", gt, "--untracked", "exclude", "-s",
                    "runner.metrics.test=['num_false_positives','mota']")
    assert excluded.exit_code == 0, excluded.output
    assert "1 untracked predicted instance(s) excluded" in excluded.output
    assert re.search(r"num_false_positives\s+0\n", excluded.output)


def test_mask_matching_follows_the_ctc_rule_where_boxes_do_not(tmp_path, cfg):
    import tifffile

    for folder, prefix, table in (("01_GT/TRA", "man_track", "man_track.txt"), ("01_RES", "mask", "res_track.txt")):
        (tmp_path / folder).mkdir(parents=True)
        for t in range(3):
            m = np.zeros((32, 48), np.uint16)
            m[10:16, 10:16] = 1
            if prefix == "mask" and t == 1:
                m[12, 16:36] = 1  # a 20-pixel tail: box IoU 36 / 156, mask IoU 36 / 56
            tifffile.imwrite(tmp_path / folder / f"{prefix}{t:03d}.tif", m)
        (tmp_path / folder / table).write_text("1 0 2 0\n")
    names = "runner.metrics.test=['num_misses','num_false_positives','motp']"
    boxes = _run("evaluate", cfg, "--prediction", tmp_path / "01_RES", "--truth", tmp_path / "01_GT", "-s", names,
                 "--report", tmp_path / "b.json")
    masks = _run("evaluate", cfg, "--prediction", tmp_path / "01_RES", "--truth", tmp_path / "01_GT", "-s", names,
                 "--match", "mask", "--report", tmp_path / "m.json")
    assert boxes.exit_code == 0 and masks.exit_code == 0, boxes.output + masks.output
    b, m = (json.loads((tmp_path / f).read_text()) for f in ("b.json", "m.json"))
    assert (b["metrics"]["num_misses"], b["metrics"]["num_false_positives"]) == (1, 1)
    assert (m["metrics"]["num_misses"], m["metrics"]["num_false_positives"]) == (0, 0)
    assert m["metrics"]["motp"] == pytest.approx((1 - 36 / 56) / 3)
    assert m["motp_convention"] == "1 - mask IoU" and "motp (1 - mask IoU)" in masks.output
    assert b["metrics"]["DET"] == m["metrics"]["DET"] == 1.0  # DET always matches by masks
    # HOTA on mask IoU: the 0.643 pair is a TP for the 12 alphas 0.05..0.60, not for the 7 above
    assert m["metrics"]["LocA"] == pytest.approx((12 * (2 + 36 / 56) / 3 + 7 * 1.0) / 19)


def test_ctc_fix_reports_unlisted_absent_labels_and_impossible_parents(tmp_path):
    import tifffile

    _write(tmp_path / "in", dict(GT), gt=False)
    m = tifffile.imread(tmp_path / "in" / "mask002.tif")
    m[60:64, 60:64] = 30  # in the masks, not in the table
    tifffile.imwrite(tmp_path / "in" / "mask002.tif", m)
    with open(tmp_path / "in" / "res_track.txt", "a") as f:
        f.write("31 0 1 0\n")  # in the table, no pixels
    text = (tmp_path / "in" / "res_track.txt").read_text().replace("5 2 6 0", "5 2 6 1")  # 1 ends at 7
    (tmp_path / "in" / "res_track.txt").write_text(text)
    lines = []
    report = fix_ctc(tmp_path / "in", tmp_path / "out", say=lines.append)
    assert report["unlisted"] == [30] and report["absent"] == [31] and report["parents_dropped"] == {5: 1}
    assert lines == ["mask labels not in res_track.txt added without parent: [30]",
                     "labels listed in res_track.txt with no pixels left out: [31]",
                     "label 5: parent 1 does not end before it begins; written without parent"]
    table = {int(r[0]): r.tolist() for r in read_ctc_tracks(tmp_path / "out" / "res_track.txt")}
    assert table[30] == [30, 2, 2, 0] and 31 not in table and table[5] == [5, 2, 6, 0]
    assert check_ctc(tmp_path / "out") == []


def test_pairing_and_pattern_messages(tmp_path, cfg):
    from bioloop import api
    from bioloop.errors import ConfigError, DataError
    from bioloop.tasks.tracking.io_ctc import mask_files

    for seq in ("01", "02"):
        _write(tmp_path / "gt" / f"{seq}_GT" / "TRA", dict(GT), gt=True)
    _write(tmp_path / "res" / "03_RES", dict(GT), gt=False)
    _write(tmp_path / "res" / "01_RES", dict(GT), gt=False)
    c = api.load_config(cfg)
    with pytest.raises(DataError, match=r"no ground truth for result sequence\(s\) \['03'\] \(got \['01', '02'\]\)"):
        api.evaluate(c, prediction=str(tmp_path / "res"), truth=str(tmp_path / "gt"))
    (tmp_path / "res" / "03_RES").rename(tmp_path / "03_RES")
    result = _run("evaluate", cfg, "--prediction", tmp_path / "res", "--truth", tmp_path / "gt")
    assert result.exit_code == 0, result.output
    assert "ground-truth sequence(s) ['02'] have no result and are not scored" in result.output
    with pytest.raises(ConfigError, match="evaluate: 2 predictions for 1 ground truths"):
        api.evaluate(c, prediction=[str(tmp_path / "res"), str(tmp_path / "res")], truth=str(tmp_path / "gt"))
    mot = tmp_path / "a.txt"
    mot.write_text("1,1,10,10,5,5\n")
    with pytest.raises(DataError, match="a CTC folder is scored against a CTC folder"):
        api.evaluate(c, prediction=str(tmp_path / "res" / "01_RES"), truth=str(mot))
    with pytest.raises(ConfigError, match="mask matching needs CTC folders"):
        api.evaluate(c, prediction=str(mot), truth=str(mot), match="mask")
    (tmp_path / "mot_res").mkdir()
    (tmp_path / "mot_res" / "SEQ.txt").write_text("1,1,10,10,5,5\n")
    with pytest.raises(DataError, match=r"no ground truth for 1 result\(s\) \(got \['SEQ.txt'\]\); expect "):
        api.evaluate(c, prediction=str(tmp_path / "mot_res"), truth=str(tmp_path / "gt"))
    folder = str(tmp_path / "res" / "01_RES")
    with pytest.raises(ConfigError, match=r"mask_pattern: needs exactly one '\*' where the frame number is"):
        mask_files(folder, "mask", "frame.tif")
    with pytest.raises(DataError, match=r"no mask files match 'frame_\*.tif'"):
        mask_files(folder, "mask", "frame_*.tif")
    assert sorted(mask_files(folder, "mask", "mask*.tif")) == list(range(8))
    res = tmp_path / "res" / "01_RES"
    (res / "mask0003.tif").write_bytes((res / "mask003.tif").read_bytes())
    with pytest.raises(DataError, match=r"two mask files for frame 3"):
        mask_files(folder, "mask", "mask*.tif")


def test_untracked_ground_truth_is_an_error(tmp_path, cfg):
    gt = tmp_path / "gt.csv"
    gt.write_text("TRACK_ID,FRAME,POSITION_X,POSITION_Y\n1,0,10,10\n,0,50,50\n1,1,11,10\n")
    result = _run("evaluate", cfg, "--prediction", gt, "--truth", gt)
    assert result.exit_code == 1
    assert "gt.csv: 1 ground-truth instance(s) have no track (got 1); give every true instance a track" \
        in result.output
