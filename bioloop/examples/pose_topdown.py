"""Multi-animal top-down pose estimation (DeepLabCut 3 `method: td`): detect each animal, then pose its crop.

Copy me with `bioloop init pose_topdown my_config.py`, edit, then run

    bioloop synthetic data/pose_multi --layout pose --animals 2   # or point data_dir at your own project
    bioloop train my_config.py          # the pose model on animal crops, then the detector
    bioloop predict my_config.py --input data/pose_multi/videos/video0.mp4 --output preds/video0.csv --slp preds/video0.slp
    bioloop evaluate my_config.py --prediction preds/labeled.csv   # after predicting data/pose_multi/labeled-data/<video>

Training fits the pose model on one crop per labeled animal (the keypoints' box grown by
`detector.box_padding`, resized to `detector.crop_size`; validation metrics are in frame pixels),
then trains the detector on the same boxes into `<checkpoint folder>/detector/` (rerunning resumes
or skips it). Prediction detects animals, poses every crop and writes one set of columns per
animal (`animal0`, `animal1`, ...; NaN where fewer were found); evaluation matches predicted to
labeled animals per frame (Hungarian, on mean keypoint distance).
"""

task = "pose"
method = "td"  # "bu": one pose per image

# --- data -----------------------------------------------------------------------------
data_dir = "data/pose_multi"  # labels file + labeled-data/<video>/imgNNNN.png, several animals per frame
labels_file = "CollectedData.csv"  # DLC multi-animal CSV (4 header rows), DLC .h5 or SLEAP .slp
keypoint_names = ["nose", "ear_left", "ear_right", "paw_left", "paw_right", "spine", "tail_base", "tail_tip"]
train_prob = 0.75
val_prob = 0.25
imgaug = "dlc-top-down"  # augmentation of the crops

# --- pose model (input: the detector.crop_size crops) ----------------------------------
model_type = "heatmap"
backbone = "resnet18"
pretrained = False
unfreezing_epoch = 0
heatmap_sigma = 1.5
locref = True

# --- the detector (DeepLabCut's nested spelling; flat names such as detector.epochs work too)
detector = {
    "data": {"colormode": "RGB", "train": {"hflip": True, "normalize_images": True}},
    "model": {"type": "FasterRCNN", "variant": "fasterrcnn_mobilenet_v3_large_fpn", "pretrained": False},
    "runner": {"type": "DetectorTrainingRunner", "eval_interval": 5,
               "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
               "snapshots": {"max_snapshots": 3, "save_epochs": 5}},
    "train_settings": {"batch_size": 4, "epochs": 30},
    "crop_size": {"height": 128, "width": 128},  # the pose model's input
    "box_padding": 0.1,  # keypoint boxes grow by this fraction of their size
    "score_threshold": 0.5,  # detections below this are dropped
    "max_animals": 2,  # at most this many animals per frame (the CSV's individuals)
}

# --- optimisation ---------------------------------------------------------------------
learning_rate = 1e-3
batch_size = 8
epochs = 30
iterations_per_epoch = 40

# --- validation, checkpoints, logs, after training ------------------------------------
key_metric = "pixel_error/mean"  # in frame pixels, crops mapped back through their boxes
eval = {"pck_thresholds": [3.0, 5.0], "oks_sigmas": 0.1,
        "predict_vids_after_training": True, "test_videos_directory": "data/pose_multi/videos",
        "save_vids_after_training": True, "confidence_thresh_for_vid": 0.5}
max_snapshots = 3
model_save_path = "runs/checkpoints/{model_name}_{epoch}.pth"  # the detector: runs/checkpoints/detector/
logs_save_path = "runs/logs/{model_name}"
model_name = "pose_topdown"
load_model = "latest"  # rerunning resumes the pose model, then the detector
