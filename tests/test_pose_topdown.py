"""Top-down pose: the crop mapping (hand-checked), crops of labeled animals, predictions mapped back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bioloop.tasks.pose.data import IMAGENET_MEAN, IMAGENET_STD
from bioloop.tasks.pose.topdown import PoseCrops, crop_image, crop_transform, predict_topdown
from tests.fakes import FixedDetector


def test_crop_transform_golden_square():
    # box 40 x 20 -> padded to 40 x 40 around its centre (30, 30); 64 / 40 = 1.6
    t = crop_transform((10, 20, 50, 40), (64, 64))
    assert t.scale == pytest.approx(1.6)
    np.testing.assert_allclose(t.offset, [-16.5, -16.5])
    np.testing.assert_allclose(t.to_crop([[30, 30], [10, 10], [50, 50]]), [[31.5, 31.5], [-0.5, -0.5], [63.5, 63.5]])
    np.testing.assert_allclose(t.matrix, [[1.6, 0, -16.5], [0, 1.6, -16.5]])


def test_crop_transform_golden_wide_crop():
    # a 10 x 10 box into a 20 (H) x 40 (W) crop is widened to 20 x 10: scale 2, left edge x = -5
    t = crop_transform((0, 0, 10, 10), (20, 40))
    assert t.scale == 2
    np.testing.assert_allclose(t.offset, [9.5, -0.5])
    np.testing.assert_allclose(t.to_crop([5, 5]), [19.5, 9.5])  # box centre -> crop centre


def test_crop_mapping_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x1, y1 = rng.uniform(-50, 500, 2)
        box = (x1, y1, x1 + rng.uniform(1, 300), y1 + rng.uniform(1, 300))
        t = crop_transform(box, tuple(rng.integers(16, 300, 2)))
        pts = rng.uniform(-100, 900, (50, 2))
        np.testing.assert_allclose(t.to_frame(t.to_crop(pts)), pts, rtol=0, atol=1e-9)


def test_crop_image_matches_the_mapping():
    frame = np.zeros((40, 40, 3), np.uint8)
    frame[7, 13] = 255  # x = 13, y = 7
    crop = crop_image(frame, (9.5, 4.5, 25.5, 20.5), (16, 16))  # scale 1, offset (-10, -5)
    assert crop.shape == (16, 16, 3) and crop.dtype == np.uint8
    assert crop[2, 3, 0] == 255 and crop[..., 0].sum() == 255
    # scale 2: the pixel centre lands on (6.5, 4.5), between crop pixels 6-7 and 4-5, 0.75 * 0.75 each
    crop = crop_image(frame, (9.5, 4.5, 17.5, 12.5), (16, 16))
    np.testing.assert_allclose(crop_transform((9.5, 4.5, 17.5, 12.5), (16, 16)).to_crop([13, 7]), [6.5, 4.5])
    assert np.all(np.abs(crop[4:6, 6:8, 0].astype(float) - 255 * 0.5625) <= 1)
    assert crop[..., 0].max() == crop[4:6, 6:8, 0].max()
    # outside the frame is 0
    assert crop_image(np.full((8, 8), 200, np.uint8), (4, 4, 20, 20), (8, 8))[-1, -1] == 0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from bioloop.data.synthetic_pose import make_pose_dataset
    from bioloop.tasks.pose.labels import read_labels

    ds = make_pose_dataset(tmp_path_factory.mktemp("pose"), n_frames=3, image_size=(64, 80), n_animals=2,
                           n_videos=1, video=False)
    return ds, read_labels(ds.csv_path)


def test_pose_crops_one_item_per_animal_and_map_back(dataset):
    ds, labels = dataset
    crops = PoseCrops(labels, [0, 2], crop_hw=(32, 48), box_padding=0.2)
    expected = [(r, a) for r in (0, 2) for a in range(2) if np.isfinite(labels.keypoints[r, a]).all(1).sum() >= 2]
    assert crops.items == expected and len(crops) == len(expected)
    item = crops[0]
    assert item["image"].shape == (3, 32, 48) and item["image"].dtype == torch.float32
    assert item["keypoints"].shape == (labels.num_keypoints, 2) and item["index"] == expected[0][0]
    assert item["orig_hw"].tolist() == [64, 80]
    row, animal = expected[0]
    back = crop_transform(item["box"].numpy(), (32, 48)).to_frame(item["keypoints"].numpy().astype(np.float64))
    truth = labels.keypoints[row, animal]
    np.testing.assert_allclose(back, truth, atol=1e-4)  # float32 crop pixels
    # the crop shows the frame's pixels at the mapped places (the synthetic disk colours)
    image = ds.images[row]
    assert np.isfinite(truth[0]).all()
    x, y = np.rint(item["keypoints"][0].numpy()).astype(int)
    raw = crop_image(image, item["box"].numpy(), (32, 48))
    assert raw[y, x, 0] > 200 > 50 > raw[y, x, 1]  # the red nose disk (230, 30, 30)
    assert np.allclose(item["image"].numpy(), ((raw / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1),
                       atol=1e-5)


def test_pose_crops_training_draws_are_seeded_and_augment_the_crop(dataset):
    _, labels = dataset
    seen = []

    def aug(image, kp, rng):
        seen.append(image.shape)
        return image[:, ::-1].copy(), np.stack([image.shape[1] - 1 - kp[:, 0], kp[:, 1]], axis=1)

    crops = PoseCrops(labels, [0], crop_hw=(32, 32), augmentation=aug, jitter=0.2)
    a, b, c = crops[(0, 7)], crops[(0, 7)], crops[(0, 8)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["box"], b["box"])
    assert not torch.equal(a["box"], c["box"])
    assert seen == [(32, 32, 3)] * 3
    plain = crops[0]  # no seed: no jitter, no augmentation
    assert len(seen) == 3 and not torch.equal(plain["box"], a["box"])
    # the flip moved the keypoints with the pixels: map the un-flipped ones back to the frame
    kp = a["keypoints"].numpy().astype(np.float64)
    kp[:, 0] = 31 - kp[:, 0]
    back = crop_transform(a["box"].numpy(), (32, 32)).to_frame(kp)
    ok = np.isfinite(kp).all(1)
    np.testing.assert_allclose(back[ok], labels.keypoints[0, crops.items[0][1]][ok], atol=1e-4)


class _FixedPose(torch.nn.Module):
    """Puts keypoint 0 at the crop centre and keypoint 1 on the crop's top-left corner."""

    def __init__(self, crop_hw):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.crop_hw = crop_hw
        self.batches = []

    def forward(self, x):
        self.batches.append(tuple(x.shape))
        h, w = self.crop_hw
        kp = torch.tensor([[(w - 1) / 2, (h - 1) / 2], [-0.5, -0.5]]).expand(len(x), 2, 2)
        return {"kp": kp, "conf": torch.full((len(x), 2), 0.8)}


def test_predict_topdown_maps_crop_predictions_to_frame_pixels():
    crop_hw = (32, 64)
    boxes_tv = torch.tensor([[10.5, 20.5, 30.5, 40.5], [0.5, 0.5, 8.5, 4.5]])  # pixel edges (torchvision)
    outputs = [{"boxes": boxes_tv, "scores": torch.tensor([0.9, 0.7]), "labels": torch.tensor([1, 1])},
               {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    pose = _FixedPose(crop_hw)
    frames = [np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64, 3), np.uint8)]
    result = predict_topdown(FixedDetector(outputs), pose, lambda out: (out["kp"], out["conf"]), frames, crop_hw,
                             score_threshold=0.5)
    assert pose.batches == [(2, 3, 32, 64)]  # both crops in one batch
    kp, conf, boxes, scores = result[0]
    np.testing.assert_allclose(boxes, [[10, 20, 30, 40], [0, 0, 8, 4]])
    np.testing.assert_allclose(scores, [0.9, 0.7])
    # box 1 (20 x 20) widens to 40 x 20 for the 2:1 crop: centre (20, 30), top-left corner (0, 20)
    # box 2 (8 x 4) is already 2:1: centre (4, 2), top-left corner (0, 0)
    np.testing.assert_allclose(kp, [[[20, 30], [0, 20]], [[4, 2], [0, 0]]], atol=1e-9)
    np.testing.assert_allclose(conf, 0.8)
    kp, conf, boxes, scores = result[1]
    assert kp.shape == (0, 2, 2) and conf.shape == (0, 2) and boxes.shape == (0, 4)
    empty = predict_topdown(FixedDetector(outputs[1:]), pose, lambda o: (o["kp"], o["conf"]), frames[:1], crop_hw,
                            num_keypoints=5)
    assert empty[0][0].shape == (0, 5, 2)
