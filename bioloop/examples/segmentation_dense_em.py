"""Dense 3D instance segmentation of EM neurons: affinities + mutex watershed (every voxel is a neuron).

Copy me with `bioloop init segmentation_dense_em my_config.py`, edit, then run

    bioloop synthetic data --layout cells   # touching cells filling a volume; or your own dense labels
    bioloop train my_config.py
    bioloop predict my_config.py --input data/cells.zarr/raw --output affinities.zarr --roi 0:256,848:1280,640:1280
    bioloop process my_config.py --input affinities.zarr --output neurons.zarr
    bioloop evaluate my_config.py --prediction neurons.zarr --truth data/cells.zarr/labels/crop3

A foreground mask cannot separate neurons that touch everywhere, so the model learns
*affinities* instead: for each offset o, the probability that voxel u and voxel u + o belong
to the same neuron. They are derived from the instance labels on the fly, after augmentation
(NaN, so ignored by the loss, where u + o leaves the patch or is unannotated). Predict writes
one probability image per offset (`<output>/neuron_aff<k>`); `bioloop process` agglomerates them
into neuron ids with a mutex watershed (the `mwatershed` package), block by block, merging
fragments across block faces by their mean affinity. Evaluate reports variation of
information (split/merge) and adapted Rand error: the connectomics scores.

Every public name below is a setting (`bioloop config show my_config.py` lists them all);
a misspelt name is an error. Relative paths are relative to this file's folder.
"""

# --- data -----------------------------------------------------------------------------
datasplit_path = "data/datasplit.csv"  # crop rows: usage, raw image, instance label image, class
classes = ["neuron"]
label_layout = "instances"  # one label image per crop; every id > 0 is one neuron, 0 unlabelled
input_array_info = {"shape": (16, 64, 64), "scale": (8, 8, 8)}
# Nearest neighbours along z, y, x plus long-range offsets: long-range affinities are what lets
# the mutex watershed cut where a membrane is faint. foreground=False: dense labels have no
# background (with background, keep the default True to add a foreground channel).
instance_targets = {
    "kind": "affinities",
    "offsets": [(1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0), (0, 6, 0), (0, 0, 6), (4, 0, 0), (0, 12, 0), (0, 0, 12)],
    "foreground": False,
}
# Mirror and swap y/x: instance ids travel with the raw (any rotation must keep
# target_interpolation "nearest", which bioloop checks).
spatial_transforms = {"mirror": {"axes": {"x": 0.5, "y": 0.5, "z": 0.5}}, "transpose": {"axes": ["x", "y"]}}
intensity_transforms = {"contrast": {"range": [0.8, 1.2]}, "noise": {"std": 0.03, "p": 0.5}}

# --- model ----------------------------------------------------------------------------
model_name = "3d_unet"
model_kwargs = {"depth": 3, "base_channels": 12}  # CPU-sized; widen (32+) on a GPU

# --- optimisation ---------------------------------------------------------------------
learning_rate = 1e-3
optimizer = {"type": "Adam"}
batch_size = 2
epochs = 40
iterations_per_epoch = 100
criterion = "BCEWithLogitsLoss"  # masked: NaN affinities (offset leaving the patch) are ignored
max_grad_norm = 1.0

# --- validation, checkpoints, logs ----------------------------------------------------
validation_batch_limit = 16
key_metric = "loss"  # per-channel IoU of affinities says little about neurons; the loss does
model_save_path = "runs/checkpoints/{model_name}_{epoch}.pth"
logs_save_path = "runs/logs/{model_name}"
load_model = "latest"
random_seed = 42

# --- `bioloop process` ------------------------------------------------------------------
# mutex_bias: subtracted from every affinity before the mutex watershed; raise it (0.6, 0.7) when
# neurons merge, lower it when they split. halo: context read around each block (>= the
# longest offset). min_size drops specks.
process = {"agglomeration": "mutex_watershed", "mutex_bias": 0.5, "halo": 16, "min_size": 50,
           "block_shape": (64, 256, 256)}
