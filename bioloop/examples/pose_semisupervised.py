"""Semi-supervised pose estimation: labeled frames plus unsupervised losses on unlabeled videos
(Lightning Pose's temporal and PCA losses), with the temporal context model.

Copy me with `bioloop init pose_semisupervised my_config.py`, edit, then run

    bioloop synthetic data/pose --layout pose
    bioloop train my_config.py
    bioloop predict my_config.py --input data/pose/videos/video0.mp4 --output preds/video0.csv

Everything runs on CPU or GPU through bioloop's own video reader (no NVIDIA DALI needed). Each
labeled sample brings a short clip of unlabeled frames; the `dali` section sets how many
unlabeled frames a batch holds (and how many frames a prediction batch reads).
"""

task = "pose"

data_dir = "data/pose"
labels_file = "CollectedData.csv"
video_dir = "data/pose/videos"  # unlabeled videos for the unsupervised losses
keypoint_names = ["nose", "ear_left", "ear_right", "paw_left", "paw_right", "spine", "tail_base", "tail_tip"]
image_resize_dims = {"height": 128, "width": 160}
train_prob = 0.75
val_prob = 0.25
imgaug = "dlc"

# heatmap_mhcrnn sees frames t-2..t+2 and keeps the more confident of a static and a context
# heatmap per keypoint; use "heatmap" for the plain model.
model_type = "heatmap_mhcrnn"
backbone = "resnet18"
pretrained = False
unfreezing_epoch = 0
heatmap_sigma = 1.5

losses_to_use = ["temporal", "pca_singleview"]
columns_for_singleview_pca = [0, 1, 2, 5, 6]  # keypoints visible in (almost) every frame
losses = {
    "temporal": {"log_weight": 5.0, "epsilon": 10.0, "prob_threshold": 0.05, "warmup_epochs": 5},
    "pca_singleview": {"log_weight": 5.0, "components_to_keep": 0.99, "warmup_epochs": 5},
}
dali = {"context_train_batch_size": 16, "context_predict_sequence_length": 32,
        "base_train_sequence_length": 16, "base_predict_sequence_length": 64}

learning_rate = 1e-3
batch_size = 4
epochs = 30
iterations_per_epoch = 40

key_metric = "pixel_error/mean"
eval = {"predict_vids_after_training": False}
model_save_path = "runs/checkpoints/{model_name}_{epoch}.pth"
logs_save_path = "runs/logs/{model_name}"
model_name = "pose_semisupervised"
load_model = "latest"
