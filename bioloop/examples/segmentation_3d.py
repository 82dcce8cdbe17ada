"""3D semantic segmentation of nuclei and mitochondria in an EM volume (CellMap layout).

Copy me with `bioloop init segmentation_3d my_config.py`, edit, then run

    bioloop synthetic data                # or point datasplit_path at your own crops
    bioloop train my_config.py
    bioloop predict my_config.py --input data/synthetic_em.zarr/recon-1/em/fibsem-uint8 --output pred.zarr --tta
    bioloop process my_config.py --input pred.zarr --output labels.zarr
    bioloop evaluate my_config.py --prediction labels.zarr --truth data/synthetic_em.zarr/recon-1/labels/groundtruth/crop6

Every public name below is a setting (`bioloop config show my_config.py` lists them all);
a misspelt name is an error. Relative paths are relative to this file's folder.
"""

# --- data -----------------------------------------------------------------------------
datasplit_path = "data/datasplit.csv"
# When datasplit_path does not exist it is generated from this search (split by dataset so one
# cell never lands in both train and validate; `bioloop datasplit --help` does the same by hand).
datasplit = {"search_path": "data/synthetic_em.zarr/recon-1/{name}", "raw_name": "em/fibsem-uint8",
             "crop_name": "labels/groundtruth/{crop}/{label}"}
validation_prob = 0.3
classes = ["nuc", "mito"]
# 3D patches: (z, y, x) voxels at 8 nm. The level of the OME-NGFF pyramid with this voxel
# size is read; if none matches, the nearest finer level is resampled.
input_array_info = {"shape": (16, 64, 64), "scale": (8, 8, 8)}
# Augmentation acts only on the axes named: mirror all three, swap y/x, rotate in the y-x plane
# (rotation about z), plus intensity jitter on the normalised raw values.
spatial_transforms = {
    "mirror": {"axes": {"x": 0.5, "y": 0.5, "z": 0.5}},
    "transpose": {"axes": ["x", "y"]},
    "rotate": {"axes": {"z": [-180, 180]}},
}
intensity_transforms = {"noise": {"std": 0.02, "p": 0.5}, "contrast": {"range": [0.8, 1.2], "p": 0.5}}
# uint8 raw -> [0, 1]; recorded in the checkpoint so `bioloop predict` normalises identically.
normalization = "dtype"
weighted_sampler = True  # crops with rare classes are drawn as often as crops with common ones

# --- model ----------------------------------------------------------------------------
model_name = "3d_unet"  # also: 3d_resnet, vitnet
model_kwargs = {"depth": 3, "base_channels": 8}

# --- optimisation ---------------------------------------------------------------------
learning_rate = 1e-3
batch_size = 2
epochs = 20
iterations_per_epoch = 50
criterion = "bce_dice"
criterion_kwargs = {"weight_loss": [1.0, 2.0]}  # mitochondria count double
max_grad_norm = 1.0

# --- validation, checkpoints, logs ----------------------------------------------------
validation_batch_limit = 32
key_metric = "iou_mean"
model_save_path = "runs/checkpoints/{model_name}_{epoch}.pth"
logs_save_path = "runs/logs/{model_name}"
load_model = "latest"

# --- `bioloop process` ------------------------------------------------------------------
# Nuclei become instances (3D connected components, consistent across blocks, split by a
# distance-transform watershed); mitochondria stay a mask. Objects under 50 voxels are dropped.
process = {
    "thresholds": {"nuc": 0.5, "mito": 0.6},
    "instance_classes": ["nuc"],
    "watershed": True,
    "min_distance": 160.0,
    "min_size": 50,
}
