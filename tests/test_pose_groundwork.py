"""The pose building blocks agree with each other: generated labels read back, heatmaps decode them."""

import numpy as np
import torch

from bioloop.data.synthetic_pose import make_pose_dataset
from bioloop.tasks.pose.heatmaps import decode_heatmaps, make_heatmaps
from bioloop.tasks.pose.labels import check_keypoints, read_labels
from bioloop.tasks.pose.metrics import summarize


def test_generated_csv_and_slp_read_back_and_encode_decode(tmp_path):
    data = make_pose_dataset(tmp_path, n_frames=8, n_videos=1, video=False)
    for path in (data.csv_path, data.slp_path):
        labels = check_keypoints(read_labels(path), keypoint_names=list(data.keypoint_names), where="test.py")
        assert labels.num_frames == 8
        np.testing.assert_allclose(labels.keypoints[:, 0], data.keypoints[:, 0], atol=1e-3, equal_nan=True)
    truth = torch.as_tensor(data.keypoints[:, 0], dtype=torch.float32)
    maps, valid = make_heatmaps(truth, data.image_size, stride=4, sigma=2.0)
    decoded, confidence = decode_heatmaps(maps, stride=4)
    scores = summarize(decoded.numpy(), truth.numpy(), list(data.keypoint_names))
    assert scores["pixel_error/mean"] < 0.1 and bool(valid.any())
    assert float(confidence[valid].min()) > 0.5
