"""2D semantic segmentation of nuclei and mitochondria in an EM volume (CellMap layout).

Copy me with `bioloop init segmentation_2d my_config.py`, edit, then run

    bioloop synthetic data                # or point datasplit_path at your own crops
    bioloop train my_config.py
    bioloop predict my_config.py --input data/synthetic_em.zarr/recon-1/em/fibsem-uint8 --output pred.zarr
    bioloop evaluate my_config.py --prediction pred.zarr --truth data/synthetic_em.zarr/recon-1/labels/groundtruth/crop6

Every public name below is a setting; `bioloop config show my_config.py` lists them all with
their defaults, and a misspelt name is an error, never silently ignored. Relative paths
are relative to this file's folder. Names starting with "_" and imports are yours.
"""

# --- data -----------------------------------------------------------------------------
# A csc-style CSV: one row per crop, usage "train" or "validate".
datasplit_path = "data/datasplit.csv"
# Classes to predict: one output channel each. A crop that does not annotate a class gives
# NaN targets for it, which the loss and the metrics ignore.
classes = ["nuc", "mito"]
# Patch geometry: (z, y, x) voxels at a voxel size in nm. z = 1 makes 2D patches; the
# scale must match one level of the OME-NGFF multiscale images.
input_array_info = {"shape": (1, 96, 96), "scale": (8, 8, 8)}
# Augmentation: mirror along y/x with probability 0.5; swap y and x.
spatial_transforms = {"mirror": {"axes": {"x": 0.5, "y": 0.5}}, "transpose": {"axes": ["x", "y"]}}

# --- model ----------------------------------------------------------------------------
model_name = "2d_unet"  # also 2d_resnet, timm_unet (any timm encoder: model_kwargs encoder=...)
model_kwargs = {"depth": 4, "base_channels": 8}  # small enough for a CPU; widen on a GPU
# (`bioloop demo` uses base_channels 16 and foreground_sampling = 0.5: with 8 channels and uniform patches
# the rare mitochondria were learned at some random seeds and never predicted at others.)
# Or build it yourself:  model = MyUNet(...)   (then model_name only names the files)

# --- optimisation ---------------------------------------------------------------------
learning_rate = 1e-3
batch_size = 8
epochs = 20
iterations_per_epoch = 50  # batches per epoch; each batch is freshly sampled patches
optimizer = {"type": "AdamW", "params": {"weight_decay": 1e-4}}
scheduler = {"type": "CosineAnnealingLR", "params": {"T_max": 20}}  # stepped each epoch
criterion = "bce_dice"  # masked BCE + soft Dice; or any torch loss class / instance
max_grad_norm = 1.0

# --- validation, checkpoints, logs ----------------------------------------------------
validation_batch_limit = 64  # and/or validation_time_limit = 60 (seconds)
key_metric = "iou_mean"  # picks the best checkpoint (higher is better)
monitor = ["iou/nuc"]  # a best checkpoint for this metric too
early_stopping = {"patience": 8, "min_delta": 0.001, "min_epochs": 5}
model_save_path = "runs/checkpoints/{model_name}_{epoch}.pth"
logs_save_path = "runs/logs/{model_name}"  # tensorboard --logdir runs/logs
load_model = "latest"  # rerunning resumes; None starts fresh
random_seed = 42

# --- `bioloop process` ------------------------------------------------------------------
# Probabilities -> masks and instance ids (uint32). Nuclei become 3D connected components,
# consistent across processing blocks; objects smaller than 20 voxels are removed.
process = {"thresholds": {"nuc": 0.5, "mito": 0.5}, "instance_classes": ["nuc"], "min_size": 20}
