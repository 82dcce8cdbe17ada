"""2D segmentation streamed from S3 (or any fsspec URL): no download, the same config otherwise.

Copy me with `bioloop init segmentation_s3 my_config.py`, edit, then run

    .venv/bin/python tools/local_s3.py data --port 5555   # a local S3 (moto) serving the synthetic data
    bioloop train my_config.py                            # in another terminal
    bioloop predict my_config.py --input s3://bioloop-demo/data/synthetic_em.zarr/recon-1/em/fibsem-uint8 \\
        --output pred.zarr --roi 0:200,1000:2000,2000:3000

On real data, point datasplit_path at a CSV with s3:// paths (`bioloop datasplit --search-path
's3://bucket/{dataset}/{dataset}.zarr/recon-1/{name}' --anon ...` writes one) and set
storage_options for the bucket: {"anon": True} for public buckets such as CellMap's
(s3://janelia-cosem-datasets), or credentials / an endpoint for private ones.
"""

# --- data -----------------------------------------------------------------------------
datasplit_path = "data/datasplit_s3.csv"  # written by tools/local_s3.py; its paths are s3:// URLs
# fsspec/s3fs options used for every s3:// read (raw, labels, prediction input).
storage_options = {"endpoint_url": "http://127.0.0.1:5555", "key": "testing", "secret": "testing"}
classes = ["nuc", "mito"]
input_array_info = {"shape": (1, 96, 96), "scale": (8, 8, 8)}
spatial_transforms = {"mirror": {"axes": {"x": 0.5, "y": 0.5}}, "transpose": {"axes": ["x", "y"]}}
# Several DataLoader workers hide the network latency of remote reads.
num_workers = 2

# --- model and optimisation -------------------------------------------------------------
model_name = "2d_unet"
model_kwargs = {"depth": 4, "base_channels": 8}
learning_rate = 1e-3
batch_size = 8
epochs = 10
iterations_per_epoch = 30
criterion = "bce_dice"

# --- validation, checkpoints ----------------------------------------------------------
validation_batch_limit = 16
model_save_path = "runs/checkpoints/{model_name}_{epoch}.pth"
logs_save_path = "runs/logs/{model_name}"
load_model = "latest"

process = {"instance_classes": ["nuc"], "min_size": 20}
