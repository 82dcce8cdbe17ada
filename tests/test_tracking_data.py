"""Tracking clips: clip splitting, instance crops, consistent clip augmentation, dropout, the dataset."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bioloop.errors import ConfigError
from bioloop.tasks.tracking.augment import InstanceDropout, NodeDropout, build_clip_augmentation
from bioloop.tasks.tracking.config import DatasetSettings
from bioloop.tasks.tracking.data import (TrackingClips, collate, crop_instances, crop_window, frame_to_hwc,
                                         make_clips, normalise_boxes, normalise_frame,
                                         split_batch)
from bioloop.tasks.tracking.types import Instances, TrackSequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

H, W = 40, 60


def _sequence(n_frames=6, n_animals=2, name="toy", ndim=2, rgb=False):
    """Animals with nodes head/tail moving right 2 px per frame; each frame marks the nodes' pixels."""
    frames = []
    for t in range(n_frames):
        heads = np.array([[10.0 + 2 * t + 15 * k, 10.0 + 10 * k] for k in range(n_animals)])
        tails = heads + [0.0, 6.0]
        pts = np.stack([heads, tails], axis=1)
        boxes = np.concatenate([pts.min(1) - 0.5, pts.max(1) + 0.5], axis=1)
        frames.append(Instances(t, pts, boxes, np.arange(n_animals) + 7))

    def read_frame(t):
        img = np.zeros((H, W), np.uint8)
        for head, tail in frames[t].points:
            if np.isfinite(tail).all():
                img[int(tail[1]), int(tail[0])] = 100
            img[int(head[1]), int(head[0])] = 255
        if ndim == 3:
            vol = np.zeros((3, H, W), np.uint8)
            vol[1] = img
            return vol
        return np.stack([img, img // 2, img // 5], -1) if rgb else img

    return TrackSequence(name, frames, read_frame, node_names=["head", "tail"], image_hw=(H, W), ndim=ndim)


def _settings(**kw):
    base = dict(crop_size=8, padding=1, anchors="head", clip_length=4)
    base.update(kw)
    return DatasetSettings(**base)


# -- make_clips ------------------------------------------------------------------------------------

def test_make_clips_golden():
    assert make_clips([10, 5], clip_length=4) == [(0, 0, 4), (0, 4, 8), (0, 8, 10), (1, 0, 4)]  # (1,4,5): 1 frame
    assert make_clips([10, 5], clip_length=4, chunk=False) == [(0, 0, 10), (1, 0, 5)]
    assert make_clips([_sequence(3)], clip_length=2) == [(0, 0, 2)]
    # subsample: seeded, sorted; fraction rounds, int counts; same seed same clips
    all_clips = make_clips([10, 5], clip_length=4)
    half = make_clips([10, 5], clip_length=4, n_chunks=0.5, seed=3)
    assert len(half) == 2 and half == sorted(half) and set(half) <= set(all_clips)
    assert half == make_clips([10, 5], clip_length=4, n_chunks=0.5, seed=3)
    expected = [all_clips[k] for k in sorted(np.random.default_rng(3).choice(4, 2, replace=False))]
    assert half == expected
    assert len(make_clips([10, 5], clip_length=4, n_chunks=3, seed=0)) == 3
    assert make_clips([10, 5], clip_length=4, n_chunks=99) == all_clips
    assert make_clips([10, 5], clip_length=4, n_chunks=1.0) == all_clips
    assert len(make_clips([10, 5], clip_length=4, n_chunks=0.01)) == 1


def test_make_clips_rejects_bad_n_chunks():
    with pytest.raises(ConfigError, match="n_chunks: must be a fraction"):
        make_clips([10], clip_length=4, n_chunks=1.5)


# -- crops ----------------------------------------------------------------------------------------

def test_crop_centred_on_anchor_is_pixel_exact():
    frame = np.arange(H * W, dtype=np.float32).reshape(H, W)
    crops = crop_instances(frame, np.array([[20.0, 15.0], [30.4, 9.6]]), 8, padding=1)
    assert crop_window(8, 1) == (10, 10) and crops.shape == (2, 1, 10, 10)
    assert crops[0, 0, 5, 5] == frame[15, 20]  # anchor pixel at [h // 2, w // 2]
    np.testing.assert_array_equal(crops[0, 0], frame[10:20, 15:25])
    np.testing.assert_array_equal(crops[1, 0], frame[5:15, 25:35])  # (30.4, 9.6) rounds to (30, 10)
    rect = crop_instances(frame, np.array([[20.0, 15.0]]), (4, 6), padding=0)
    np.testing.assert_array_equal(rect[0, 0], frame[13:17, 17:23])


def test_border_crops_are_zero_padded():
    frame = np.ones((H, W, 3), np.uint8) * 9
    crops = crop_instances(frame, np.array([[0.0, 0.0], [W - 1.0, H - 1.0], [np.nan, 3.0]]), 6)
    assert crops.shape == (3, 3, 6, 6) and crops.dtype == np.uint8
    assert (crops[0, :, :3, :] == 0).all() and (crops[0, :, :, :3] == 0).all()
    assert (crops[0, :, 3:, 3:] == 9).all()
    assert (crops[1, :, 4:, :] == 0).all() and (crops[1, :, :, 4:] == 0).all() and (crops[1, :, :4, :4] == 9).all()
    assert (crops[2] == 0).all()  # no finite centre: nothing to crop


def test_multi_anchor_stacks_channels():
    frame = np.random.default_rng(0).random((H, W, 3)).astype(np.float32)
    centers = np.array([[[10.0, 10.0], [30.0, 20.0]]])  # one instance, two anchors
    crops = crop_instances(frame, centers, 4)
    assert crops.shape == (1, 6, 4, 4)
    np.testing.assert_array_equal(crops[0, :3], frame[8:12, 8:12].transpose(2, 0, 1))
    np.testing.assert_array_equal(crops[0, 3:], frame[18:22, 28:32].transpose(2, 0, 1))


def test_frames_3d_use_max_projection_and_channels_option():
    vol = np.zeros((3, 4, 5), np.uint16)
    vol[2, 1, 1] = 7
    assert frame_to_hwc(vol, ndim=3).shape == (4, 5, 1) and frame_to_hwc(vol, ndim=3)[1, 1, 0] == 7
    assert frame_to_hwc(np.zeros((4, 5)), channels=3).shape == (4, 5, 3)
    np.testing.assert_allclose(normalise_frame(np.array([0, 500, 1000], np.uint16)), [0, 0.5, 1])
    np.testing.assert_allclose(normalise_frame(np.array([0, 51, 255], np.uint8)), [0, 0.2, 1])


# -- dataset --------------------------------------------------------------------------------------

def test_item_format_and_values():
    seq = _sequence()
    ds = TrackingClips([seq], make_clips([seq], 4), _settings(), train=False)
    assert len(ds) == 2  # frames 0-3, 4-5
    item = ds[1]
    assert item["crops"].dtype == torch.float32 and item["crops"].shape == (4, 1, 10, 10)
    assert item["times"].tolist() == [0, 0, 1, 1] and item["frames"].tolist() == [4, 4, 5, 5]
    assert item["ids"].tolist() == [7, 8, 7, 8] and item["sequence"] == 0 and item["image_hw"] == (H, W)
    assert float(item["crops"][0, 0, 5, 5]) == 1.0  # head pixel (255) at the crop centre
    assert int((item["crops"][0, 0] > 0).sum()) == 1  # the tail, 6 px below, is outside the 10x10 crop
    np.testing.assert_allclose(item["centroids"][0].numpy(), [18.0, 13.0])  # mean of head (18,10), tail (18,16)
    np.testing.assert_allclose(item["boxes"][0].numpy(), [18 / W, 10 / H, 19 / W, 17 / H], rtol=1e-6)
    assert item["boxes"].dtype == torch.float32 and item["ids"].dtype == torch.int64


def test_tail_anchor_and_centroid_fallback():
    seq = _sequence()
    seq.frames[0].points[0, 1] = np.nan  # tail of animal 0 missing in frame 0 -> centroid (= head)
    ds = TrackingClips([seq], [(0, 0, 2)], _settings(anchors=["head", "tail"], padding=0), train=False)
    item = ds[0]
    assert item["crops"].shape == (4, 2, 8, 8)
    tail_value = 100 / 255
    assert float(item["crops"][2, 1, 4, 4]) == pytest.approx(tail_value)  # frame 1, animal 0: tail centred
    assert float(item["crops"][0, 1, 4, 4]) == 1.0  # fallback: centroid == the head


def test_max_objects_skips_crowded_frames_and_3d_rgb():
    seq = _sequence()
    seq.frames[1] = Instances(1, np.zeros((3, 2, 2)) + 5, np.zeros((3, 4)), [1, 2, 3])
    item = TrackingClips([seq], [(0, 0, 3)], _settings(max_objects=2), train=False)[0]
    assert item["frames"].tolist() == [0, 0, 2, 2]
    rgb = TrackingClips([_sequence(rgb=True)], [(0, 0, 2)], _settings(anchors=["head", "tail"]), train=False)[0]
    assert rgb["crops"].shape == (4, 6, 10, 10)
    vol = TrackingClips([_sequence(ndim=3)], [(0, 0, 2)], _settings(), train=False, channels=3)[0]
    assert vol["crops"].shape == (4, 3, 10, 10) and float(vol["crops"][0, :, 5, 5].min()) == 1.0


def test_unknown_anchor_is_a_config_error():
    with pytest.raises(ConfigError, match=r"dataset.train_dataset.anchors: 'haed' is not a node.*did you mean 'head'"):
        TrackingClips([_sequence()], [(0, 0, 2)], _settings(anchors="haed"), train=True)


# -- augmentation ---------------------------------------------------------------------------------

def test_horizontal_flip_moves_points_and_every_frame_identically():
    seq = _sequence()
    settings = _settings(augmentations={"HorizontalFlip": {"p": 1.0}, "Rotate": {"limit": 30, "p": 1.0}})
    ds = TrackingClips([seq], [(0, 0, 4)], settings, train=True)
    aug = ds.augmentation
    # identical transform: two identical frames stay identical, for any seed
    frames = np.random.default_rng(1).random((1, H, W, 1)).astype(np.float32).repeat(3, 0)
    out, _ = aug.images(frames, np.zeros((0, 2)), np.random.default_rng(5))
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2]) and not np.array_equal(out[0], frames[0])
    flip = build_clip_augmentation({"HorizontalFlip": {"p": 1.0}})
    img = np.zeros((2, H, W, 1), np.float32)
    img[0, 5, 3] = img[1, 7, 9] = 1
    out, pts = flip.images(img, np.array([[3.0, 5.0], [9.0, 7.0], [np.nan, np.nan]]), np.random.default_rng(0))
    np.testing.assert_allclose(pts[:2], [[W - 1 - 3, 5], [W - 1 - 9, 7]])
    assert np.isnan(pts[2]).all() and out[0, 5, W - 1 - 3, 0] == 1 and out[1, 7, W - 1 - 9, 0] == 1


def test_flipped_item_keeps_anchor_centred_and_boxes_follow():
    seq = _sequence()
    ds = TrackingClips([seq], [(0, 0, 4)], _settings(augmentations={"HorizontalFlip": {"p": 1.0}}), train=True)
    item = ds[(0, 123)]
    assert float(item["crops"][:, 0, 5, 5].min()) == 1.0  # every head still at its crop centre
    np.testing.assert_allclose(item["centroids"][0].numpy(), [W - 1 - 10, 13.0])
    np.testing.assert_allclose(item["boxes"][0].numpy(), [(W - 11) / W, 10 / H, (W - 10) / W, 17 / H], rtol=1e-6)


def test_node_and_instance_dropout_are_seeded_and_effective():
    pts = np.arange(5 * 4 * 2, dtype=float).reshape(5, 4, 2)
    dropped = NodeDropout(p=1.0, n=2)(pts, np.random.default_rng(0))
    assert (np.isnan(dropped).all(-1).sum(1) == 2).all()  # at most n per instance
    again = NodeDropout(p=1.0, n=2)(pts, np.random.default_rng(0))
    np.testing.assert_array_equal(np.isnan(dropped), np.isnan(again))
    assert not np.isnan(NodeDropout(p=0.0, n=2)(pts, np.random.default_rng(0))).any()
    keep = InstanceDropout(p=1.0, n=3)(10, np.random.default_rng(4))
    assert 7 <= keep.sum() <= 9
    assert InstanceDropout(p=0.0, n=3)(10, np.random.default_rng(4)).all()
    seq = _sequence(n_animals=3)
    settings = _settings(anchors="tail", augmentations={"InstanceDropout": {"p": 1.0, "n": 1},
                                                        "NodeDropout": {"p": 1.0, "n": 1}})
    ds = TrackingClips([seq], [(0, 0, 4)], settings, train=True)
    item = ds[(0, 9)]
    assert len(item["ids"]) == 8  # one of three animals gone from each of the 4 frames
    assert torch.equal(item["crops"], ds[(0, 9)]["crops"]) and torch.equal(item["ids"], ds[(0, 9)]["ids"])


def test_dataset_items_are_deterministic_per_seed():
    seq = _sequence()
    aug = {"Affine": {"rotate": (-20, 20), "translate_px": (-3, 3), "p": 1.0},
           "MotionBlur": {"blur_limit": [3, 7], "p": 0.5}, "RandomBrightnessContrast": {"p": 0.5}}
    ds = TrackingClips([seq], make_clips([seq], 4), _settings(augmentations=aug), train=True)
    a, b, c = ds[(0, 11)], ds[(0, 11)], ds[(0, 12)]
    for key in ("crops", "boxes", "centroids", "ids"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["centroids"], c["centroids"])
    val = TrackingClips([seq], make_clips([seq], 4), _settings(augmentations=aug), train=False)
    assert torch.equal(val[0]["crops"], val[0]["crops"]) and val.augmentation.is_identity


def test_ready_albumentations_pipeline_is_accepted():
    import albumentations as A

    aug = build_clip_augmentation(A.Compose([A.VerticalFlip(p=1.0)]))
    _, pts = aug.images(np.zeros((1, H, W, 1), np.float32), np.array([[3.0, 5.0]]), np.random.default_rng(0))
    np.testing.assert_allclose(pts, [[3.0, H - 1 - 5]])


def test_unknown_augmentation_name_and_bad_params():
    with pytest.raises(ConfigError, match=r"dataset.train_dataset.augmentations: unknown augmentation "
                                          r"\(did you mean 'Rotate'\?\) \(got 'Rotat'\)"):
        build_clip_augmentation({"Rotat": {"limit": 45}})
    with pytest.raises(ConfigError, match=r"did you mean 'NodeDropout'"):
        build_clip_augmentation({"NodeDropOut": {"p": 0.1}})
    with pytest.raises(ConfigError, match=r"augmentations.NodeDropout.p: must be a probability"):
        build_clip_augmentation({"NodeDropout": {"p": 2, "n": 1}})
    with pytest.raises(ConfigError, match=r"augmentations.InstanceDropout: unknown parameter"):
        build_clip_augmentation({"InstanceDropout": {"prob": 0.5}})
    with pytest.raises(ConfigError, match=r"augmentations.Rotate: albumentations rejected the parameters"):
        build_clip_augmentation({"Rotate": {"limitt": 45}})
    with pytest.raises(ConfigError, match=r"augmentations must be a dict"):
        build_clip_augmentation(["Rotate"])


def test_crop_size_error_and_collate_roundtrip():
    with pytest.raises(ConfigError, match=r"dataset.val_dataset.crop_size: must be a whole number"):
        TrackingClips([_sequence()], [(0, 0, 2)], {"crop_size": 0, "mode": "val"}, train=False)
    seq = _sequence()
    ds = TrackingClips([seq], make_clips([seq], 4), _settings(), train=False)
    batch = collate([ds[0], ds[1]])
    assert batch["crops"].shape == (12, 1, 10, 10) and batch["clip"].tolist() == [0] * 8 + [1] * 4
    assert batch["counts"].tolist() == [8, 4] and batch["start"].tolist() == [0, 4]
    assert batch["image_hw"].tolist() == [[H, W], [H, W]]
    parts = split_batch(batch)
    assert torch.equal(parts[1]["crops"], ds[1]["crops"]) and parts[1]["start"] == 4
    seq.frames[4] = seq.frames[5] = Instances(0, np.zeros((0, 2, 2)), np.zeros((0, 4)), [])
    empty = ds[1]  # a clip without instances: N = 0, same channels
    assert empty["crops"].shape == (0, 1, 10, 10) and empty["image_hw"] == (H, W)
    assert collate([ds[0], empty])["clip"].tolist() == [0] * 8
    np.testing.assert_allclose(normalise_boxes(np.array([[-0.5, -0.5, W - 0.5, H - 0.5]]), (H, W)), [[0, 0, 1, 1]])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_frame_by_frame_crops_equal_whole_clip_crops(dtype):
    """Without a pixel augmentation frames are cropped one at a time (no float copy of the clip);
    the crops are the same numbers as the whole-clip path gives (uint16: scaled by each frame's max)."""
    seq = _sequence(n_frames=4, n_animals=3)
    base = seq.read_frame
    seq.read_frame = lambda t: (base(t).astype(dtype) * (1 if dtype == np.uint8 else 40 + t))
    clips = make_clips([seq], 4)
    streamed = TrackingClips([seq], clips, _settings(anchors=["head", "tail"]), train=False)[0]
    whole = TrackingClips([seq], clips, _settings(anchors=["head", "tail"],
                                                  augmentations={"Rotate": {"limit": 0, "p": 0.0}}), train=True)
    whole = whole[(0, 0)]
    assert streamed["crops"].shape == (12, 2, 10, 10) and streamed["crops"].max() == 1.0
    assert torch.equal(streamed["crops"], whole["crops"])
    assert torch.equal(streamed["boxes"], whole["boxes"]) and streamed["image_hw"] == whole["image_hw"]
