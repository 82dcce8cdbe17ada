"""Single-animal pose estimation with a heatmap model (Lightning Pose / DeepLabCut 3 style).

Copy me with `bioloop init pose_heatmap my_config.py`, edit, then run

    bioloop synthetic data/pose --layout pose   # or point data_dir at your own labeled project
    bioloop train my_config.py
    bioloop predict my_config.py --input data/pose/videos/video0.mp4 --output preds/video0.csv --slp preds/video0.slp
    bioloop evaluate my_config.py --prediction preds/labeled.csv     # after predicting data/pose/labeled-data/<video>

Every public name below is a setting; `bioloop config show my_config.py` lists them all with
their defaults, and a misspelt name is an error, never silently ignored. Relative paths
are relative to this file's folder. Lightning Pose's nested YAML maps onto flat names
(`data.image_resize_dims` -> `image_resize_dims`, `training.train_batch_size` -> `batch_size`,
`training.max_epochs` -> `epochs`); DeepLabCut's `runner` / `train_settings` sections are
accepted as they are.
"""

task = "pose"

# --- data -----------------------------------------------------------------------------
data_dir = "data/pose"  # the project folder: labels file + labeled-data/<video>/imgNNNN.png
labels_file = "CollectedData.csv"  # DLC/LP CSV, DLC .h5 or SLEAP .slp (relative to data_dir)
# Checked against the labels file (order and spelling); a typo is an error naming the file.
keypoint_names = ["nose", "ear_left", "ear_right", "paw_left", "paw_right", "spine", "tail_base", "tail_tip"]
image_resize_dims = {"height": 128, "width": 160}  # network input; predictions map back to frame pixels exactly
# Splits are by video (no near-duplicate frames across splits); the rest is the test split.
train_prob = 0.75
val_prob = 0.25
rng_seed_data_pt = 0  # the split; written to <logs_save_path>/split.csv
# Augmentation: "default" (none), "dlc", "dlc-lr" (+ horizontal flips that swap *_left/*_right),
# "dlc-top-down", or an albumentations pipeline: imgaug = A.Compose([...], keypoint_params=...)
imgaug = "dlc-lr"

# --- model ----------------------------------------------------------------------------
model_type = "heatmap"
backbone = "mobilenetv3_large_075"  # any timm model name, or torchvision resnet18..152
pretrained = False  # or a local weights file; nothing is downloaded
unfreezing_epoch = 0  # a pretrained backbone usually stays frozen for the first epochs
backbone_lr_factor = 1.0
downsample_factor = 2  # heatmaps are 4x smaller than the input
heatmap_sigma = 1.5  # Gaussian target width in heatmap pixels
# kl/js train softmax heatmaps; from scratch (nothing pretrained) they learn far faster than mse,
# whose peak-1 targets first pull every map to zero.
heatmap_loss_type = "kl"  # or mse (Lightning Pose's default), js
locref = False  # True adds DeepLabCut location-refinement offsets
rng_seed_model_pt = 0  # head initialisation

# --- optimisation ---------------------------------------------------------------------
learning_rate = 4e-3
batch_size = 8
epochs = 20
iterations_per_epoch = 20
optimizer = {"type": "Adam"}  # plain Adam: RAdam (the default) damps its first few hundred steps
scheduler = {"type": "CosineAnnealingLR", "params": {"T_max": 20, "eta_min": 1e-4}}

# --- validation, checkpoints, logs, after training ------------------------------------
key_metric = "pixel_error/mean"  # mean Euclidean error in frame pixels (rmse/mean is the true RMSE)
eval = {"pck_thresholds": [3.0, 5.0], "oks_sigmas": 0.1,
        "predict_vids_after_training": True, "test_videos_directory": "data/pose/videos",
        "save_vids_after_training": True, "confidence_thresh_for_vid": 0.5}
max_snapshots = 3
model_save_path = "runs/checkpoints/{model_name}_{epoch}.pth"
logs_save_path = "runs/logs/{model_name}"  # tensorboard --logdir runs/logs
model_name = "pose_heatmap"
load_model = "latest"  # rerunning resumes (weights, optimizer, scheduler, sampler position)
