"""Single-animal pose estimation by direct coordinate regression (Lightning Pose `model_type: regression`).

Copy me with `bioloop init pose_regression my_config.py`, edit, then run

    bioloop synthetic data/pose --layout pose
    bioloop train my_config.py
    bioloop predict my_config.py --input data/pose/videos/video0.mp4 --output preds/video0.csv

Regression predicts the (x, y) of every keypoint from pooled backbone features: smaller and
faster than heatmaps, usually less precise. Its likelihood column is 1 (no confidence).
"""

task = "pose"

data_dir = "data/pose"
labels_file = "CollectedData.csv"
num_keypoints = 8  # checked against the labels file
image_resize_dims = {"height": 128, "width": 160}
train_prob = 0.75
val_prob = 0.25
imgaug = "dlc"

model_type = "regression"
backbone = "resnet18"
pretrained = False
unfreezing_epoch = 0

learning_rate = 1e-3
batch_size = 8
epochs = 30
iterations_per_epoch = 40
scheduler = {"type": "CosineAnnealingLR", "params": {"T_max": 30}}

key_metric = "pixel_error/mean"
eval = {"predict_vids_after_training": False}
model_save_path = "runs/checkpoints/{model_name}_{epoch}.pth"
logs_save_path = "runs/logs/{model_name}"
model_name = "pose_regression"
load_model = "latest"
