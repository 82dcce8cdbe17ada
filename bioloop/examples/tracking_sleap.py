"""Multi-animal tracking of SLEAP poses with a global tracking transformer (GTR / DREEM style).

Copy me with `bioloop init tracking_sleap my_config.py`, edit, then run

    bioloop synthetic data/tracking --layout tracking   # or point the dataset at your own .slp + videos
    bioloop view-batch my_config.py                     # look at the crops and their ids first
    bioloop train my_config.py
    bioloop predict my_config.py --input data/tracking/tracking.slp --output preds/tracked.slp
    bioloop evaluate my_config.py --prediction preds/tracked.slp --truth data/tracking/tracking.slp

The sections keep the reference's (GTR/DREEM YAML) names and spelling: `model`, `loss`, `tracker`,
`runner`, `dataset`, `dataloader`, `optimizer`, `scheduler`, `trainer`, `logging`, `early_stopping`,
`checkpointing`, `view_batch`; Lightning's settings map onto bioloop's (`trainer.max_epochs` -> `epochs`,
`dataloader.train_dataloader.batch_size` -> `batch_size`, ...). `bioloop config show my_config.py`
lists every setting with its default; a misspelt name is an error. Relative paths are relative to
this file's folder.
"""

task = "tracking"

# --- the global tracking transformer (the reference's `model` section) -----------------
model = {
    "ckpt_path": None,  # resume from a checkpoint file (same as load_model)
    "d_model": 128,  # feature size of every instance token
    "nhead": 4,
    "num_encoder_layers": 1,
    "num_decoder_layers": 1,
    "dropout": 0.05,
    "activation": "relu",  # or gelu, glu
    "return_intermediate_dec": False,  # True: deep supervision over every decoder layer
    "norm": False,
    "num_layers_attn_head": 2,
    "dropout_attn_head": 0.05,
    "return_embedding": False,
    "decoder_self_attn": False,
    # spatial (box) and temporal (frame) embeddings: "fixed" (sinusoidal), "learned" or None
    "embedding_meta": {"pos": {"mode": "fixed"}, "temp": {"mode": "fixed"}},
    # the crop encoder: any timm model, or torchvision ResNets; nothing is downloaded
    # in_chans = frame channels (3 for these RGB videos) x number of anchors
    "encoder_cfg": {"model_name": "resnet18", "backend": "timm", "in_chans": 3},
}
loss = {"neg_unmatched": False, "epsilon": 1e-4, "asso_weight": 1.0}

# --- linking at inference ---------------------------------------------------------------
tracker = {
    "window_size": 8,  # frames the tracker looks back over (references + the query frame)
    "use_vis_feats": True,  # False: associate by position and time only
    "overlap_thresh": 0.01,  # trajectory score an assignment needs; below it a new track starts
    "mult_thresh": True,  # scale the threshold by the number of references of the track
    "decay_time": 0.9,  # older frames count less (0.9 ** age)
    "iou": "mult",  # reweight by box overlap: "mult", "max" or None
    "max_center_dist": 40.0,  # pixels; farther tracks cannot be assigned
    "persistent_tracking": False,
    "max_gap": 10,  # frames a track may be missing before it ends
    "max_tracks": None,  # no limit; set the number of animals to make extra instances join their best track
}
runner = {
    "metrics": {"train": [], "val": ["num_switches", "mota", "idf1"], "test": ["num_switches", "mota", "idf1"]},
    "persistent_tracking": {"train": False, "val": False, "test": True},  # test: track across chunks
}

# --- data ---------------------------------------------------------------------------------
# SleapDataset: slp_files + video_files; or "dir": {"path": ..., "labels_suffix": ".slp", "vid_suffix": ".mp4"}
dataset = {
    "train_dataset": {
        "slp_files": ["data/tracking/tracking.slp"],
        "video_files": ["data/tracking/tracking.mp4"],
        "padding": 4,  # pixels added to each side of the crop
        "crop_size": 32,
        "anchors": "centroid",  # a node name, "centroid", or a list of nodes (stacked as channels)
        "chunk": True,
        "clip_length": 16,
        "mode": "train",
        "n_chunks": 1.0,  # fraction (or count) of the clips used
        "seed": None,  # None uses random_seed
        "augmentations": {"Rotate": {"limit": 20, "p": 0.3}, "GaussianBlur": {"blur_limit": [3, 5], "p": 0.2},
                          "NodeDropout": {"p": 0.2, "n": 1}, "InstanceDropout": {"p": 0.1, "n": 1}},
    },
    # a real project validates on other videos; the synthetic data has one
    "val_dataset": {
        "slp_files": ["data/tracking/tracking.slp"],
        "video_files": ["data/tracking/tracking.mp4"],
        "padding": 4, "crop_size": 32, "anchors": "centroid", "chunk": True, "clip_length": 32, "mode": "val",
        "n_chunks": 0.3,  # a fraction of the clips
    },
}
dataloader = {"train_dataloader": {"shuffle": True, "num_workers": 0, "batch_size": 2},
              "val_dataloader": {"shuffle": False, "num_workers": 0}}

# --- optimisation -----------------------------------------------------------------------------
# GTR's lr 1e-4 suits long GPU runs; 1e-3 learns identities within a few hundred CPU steps.
# Plain Adam, not the engine's default RAdam, which damps the first few hundred steps.
optimizer = {"name": "Adam", "lr": 1e-3, "betas": [0.9, 0.999]}
scheduler = {"name": "ReduceLROnPlateau", "mode": "min", "factor": 0.5, "patience": 10}
trainer = {"max_epochs": 20, "check_val_every_n_epoch": 1, "gradient_clip_val": 1.0, "limit_train_batches": 20,
           "limit_val_batches": 2, "log_every_n_steps": 5}
early_stopping = {"monitor": "val_loss", "min_delta": 0.01, "patience": 10, "mode": "min"}

# --- checkpoints, logs, a look at the data first -------------------------------------------
checkpointing = {"monitor": ["val_loss", "val_num_switches"], "dirpath": "runs/checkpoints/tracking_sleap",
                 "save_top_k": 1, "every_n_epochs": 1}  # best per metric + the newest
logging = {"logger_type": "TensorBoardLogger", "save_dir": "runs/logs/tracking_sleap"}
model_name = "tracking_sleap"
view_batch = {"enable": False, "num_frames": 4, "no_train": False}  # or: bioloop view-batch my_config.py
