"""Multi-camera pose estimation (Lightning Pose's multi-view projects): one labels CSV per view.

Copy me with `bioloop init pose_multiview my_config.py`, edit, then run

    bioloop synthetic data/pose_views --layout pose --views top,side
    bioloop train my_config.py
    bioloop predict my_config.py --input data/pose_views/videos/session0_top.mp4 --output preds/session0.csv
    bioloop predict my_config.py --input data/pose_views/CollectedData_top.csv --output preds/labeled.csv
    bioloop evaluate my_config.py --prediction preds/labeled_top.csv --split test   # scores every view

Row i of every view's CSV is the same moment seen by each camera (the image names agree); unlabeled
videos are named <session>_<view>.mp4. One backbone and heatmap head are shared by the views; the
pca_multiview loss ties each body part's views to one 3D point on unlabeled frames. Prediction takes
one view's video (the session's other views are found next to it) or one view's labels CSV, and
writes one CSV per view (preds/session0_top.csv, preds/session0_side.csv). Lightning Pose's
heatmap_multiview_transformer (a cross-view transformer) is not built: this is its plain multi-view
heatmap model.
"""

task = "pose"

data_dir = "data/pose_views"
view_names = ["top", "side"]
labels_file = ["CollectedData_top.csv", "CollectedData_side.csv"]  # in the order of view_names
video_dir = "data/pose_views/videos"  # <session>_<view>.mp4, for the unsupervised losses
keypoint_names = ["nose", "ear_left", "ear_right", "paw_left", "paw_right", "spine", "tail_base", "tail_tip"]
image_resize_dims = {"height": 96, "width": 96}
train_prob = 0.7
val_prob = 0.15  # the remaining sessions are the test split, scored after training
imgaug = "default"

model_type = "heatmap"
backbone = "resnet18"
pretrained = False
unfreezing_epoch = 0
heatmap_loss_type = "kl"  # learns much faster from scratch than mse
heatmap_sigma = 1.5

losses_to_use = ["pca_multiview", "temporal"]
losses = {
    "pca_multiview": {"log_weight": 5.0, "components_to_keep": 3, "warmup_epochs": 5},
    "temporal": {"log_weight": 5.0, "epsilon": 10.0, "prob_threshold": 0.05, "warmup_epochs": 5},
}
dali = {"base_train_sequence_length": 16, "base_predict_sequence_length": 64}

batch_size = 8
epochs = 30
learning_rate = 1e-3
optimizer = {"type": "Adam"}
model_name = "pose_multiview"
