"""3D structure segmentation with the Allen Cell Segmenter's unet_xy (valid convolutions, auxiliary losses).

Copy me with `bioloop init segmentation_allen_unet_xy my_config.py`, edit, then run

    bioloop synthetic allen_data --layout allen     # img*.tif + img*_GT.tif + img*_CM.tif
    bioloop train my_config.py
    bioloop predict my_config.py --input allen_data/img0.tif --output pred.zarr
    bioloop process my_config.py --input pred.zarr --output labels.zarr

How the Allen trainer's YAML maps here:
    model: {name: unet_xy_zoom, zoom_ratio: 3}  ->  model_name = "unet_xy_zoom"; model_kwargs = {"zoom_ratio": 3}
    size_in / size_out                          ->  input_array_info / target_array_info shapes
    nchannel / nclass                           ->  one input channel; classes (background + structure)
    loss: {name: Aux, loss_weight: [1, 1, 1]}   ->  criterion = "aux"; criterion_kwargs = {"loss_weight": [...]}
    loader: {datafolder, PatchPerBuffer, epoch_shuffle, batch_size, NumWorkers}
                                                ->  datasplit search_path, patch_per_buffer, epoch_shuffle,
                                                    batch_size, num_workers
    learning_rate, weight_decay, epochs, save_every_n_epoch, checkpoint_dir, resume
                                                ->  learning_rate, optimizer params, epochs,
                                                    save_every_n_epochs, model_save_path, load_model
Cost maps (name_CM.tif next to name_GT.tif) weight the loss per voxel automatically.
"""

# --- data -----------------------------------------------------------------------------
datasplit_path = "allen_data/datasplit.csv"
# Generated at the first `bioloop train` from the tif triplets in the folder (split by file).
datasplit = {"search_path": "allen_data", "layout": "allen"}
validation_prob = 0.25
# Mutually exclusive classes: the label image holds 0 (background) or 1 (structure);
# use {"structure": 255} for 0/255 masks.
classes = ["background", "structure"]
label_layout = "class_ids"
class_ids = {"background": 0, "structure": 1}
# size_in / size_out. unet_xy shrinks z by 28 and y/x by 88 (valid convolutions); an invalid
# pair is an error that lists the nearest valid sizes (Allen on a 32 GB GPU: [48,148,148] -> [20,60,60]).
input_array_info = {"shape": (36, 108, 108), "scale": (290, 108, 108)}  # nm per voxel, from the tif metadata
target_array_info = {"shape": (8, 20, 20), "scale": (290, 108, 108)}
# Fitted on the training images, then recorded in the checkpoint so predict repeats it.
normalization = {"mode": "percentile", "low": 1, "high": 99.8}
spatial_transforms = {"mirror": {"axes": {"x": 0.5, "y": 0.5}}, "transpose": {"axes": ["x", "y"]},
                      "rotate": {"axes": {"z": [-180, 180]}}}
patch_per_buffer = 40  # PatchPerBuffer: patches cut per buffer ...
epoch_shuffle = 5  # ... cut again every 5 epochs

# --- model ----------------------------------------------------------------------------
model_name = "unet_xy"  # or "unet_xy_zoom" with model_kwargs zoom_ratio (object diameter in voxels / 150)
model_kwargs = {"base_channels": 8}  # Allen uses 32 (its checkpoints load at that width)

# --- optimisation ---------------------------------------------------------------------
criterion = "aux"  # softmax cross-entropy on the main and both auxiliary outputs
criterion_kwargs = {"loss_weight": [1.0, 1.0, 1.0], "base": "cross_entropy"}
learning_rate = 1e-3  # Allen: 1e-5 with 400 epochs
optimizer = {"type": "Adam", "params": {"weight_decay": 0.005}}
batch_size = 2
epochs = 10
iterations_per_epoch = 20
save_every_n_epochs = 5

# --- validation, checkpoints ----------------------------------------------------------
validation_batch_limit = 8
key_metric = "iou/structure"
model_save_path = "runs/checkpoints/{model_name}_{epoch}.pth"
logs_save_path = "runs/logs/{model_name}"
load_model = "latest"

# --- `bioloop process` ------------------------------------------------------------------
process = {"thresholds": {"structure": 0.5, "background": 0.5}, "instance_classes": ["structure"],
           "min_size": 10}
