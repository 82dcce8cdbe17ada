"""Cell tracking on a Cell Tracking Challenge (CTC) sequence with a global tracking transformer.

Copy me with `bioloop init tracking_microscopy_ctc my_config.py`, edit, then run

    bioloop synthetic data/tracking --layout tracking   # writes data/tracking/ctc/01 + 01_GT/TRA
    bioloop train my_config.py
    bioloop predict my_config.py --input data/tracking/ctc --output preds/01_RES     # masks + res_track.txt
    bioloop evaluate my_config.py --prediction preds/01_RES --truth data/tracking/ctc/01_GT/TRA   # + DET/TRA

Microscopy data use `videos` (the raw frame folders, CTC `01`) and `tracks` (their `01_GT/TRA`
folders; MOTChallenge .txt and TrackMate .csv files work the same way). Instances are the labelled
objects of each TRA mask. 3D sequences are cropped from their maximum projection over z. The
sections keep the reference's (GTR/DREEM) names; see tracking_sleap.py for every tracker setting.
"""

task = "tracking"

model = {
    "d_model": 64,
    "nhead": 4,
    "num_encoder_layers": 1,
    "num_decoder_layers": 1,
    "dropout": 0.05,
    "activation": "relu",
    "norm": False,
    "num_layers_attn_head": 2,
    "dropout_attn_head": 0.05,
    "embedding_meta": {"pos": {"mode": "fixed"}, "temp": {"mode": "fixed"}},
    # grey frames: in_chans = 1 channel x 1 anchor (the centroid of each label)
    "encoder_cfg": {"model_name": "resnet18", "backend": "torchvision", "in_chans": 1},
}
loss = {"neg_unmatched": False, "epsilon": 1e-4, "asso_weight": 1.0}
tracker = {"window_size": 8, "use_vis_feats": True, "overlap_thresh": 0.01, "mult_thresh": True,
           "decay_time": None, "iou": None, "max_center_dist": 30.0, "persistent_tracking": False,
           "max_gap": 2, "max_tracks": None}
runner = {"metrics": {"train": [], "val": ["num_switches"], "test": ["num_switches", "mota", "idf1"]},
          "persistent_tracking": {"train": False, "val": False, "test": True}}

dataset = {
    "train_dataset": {
        "videos": ["data/tracking/ctc/01"],  # raw frames t000.tif ...
        "tracks": ["data/tracking/ctc/01_GT/TRA"],  # man_track000.tif ... + man_track.txt
        "source_format": "auto",  # a folder is a CTC sequence; .txt MOT; .csv TrackMate
        "padding": 2, "crop_size": 24, "anchors": "centroid",
        "chunk": True, "clip_length": 16, "mode": "train", "n_chunks": 1.0,
        "augmentations": {"GaussNoise": {"p": 0.2}, "InstanceDropout": {"p": 0.1, "n": 1}},
    },
    "val_dataset": {"videos": ["data/tracking/ctc/01"], "tracks": ["data/tracking/ctc/01_GT/TRA"],
                    "padding": 2, "crop_size": 24, "clip_length": 32, "mode": "val", "n_chunks": 0.3},
}
dataloader = {"train_dataloader": {"num_workers": 0, "batch_size": 2}}

optimizer = {"name": "Adam", "lr": 1e-3}  # plain Adam learns in a few hundred steps; GTR's 1e-4 is slower
trainer = {"max_epochs": 20, "limit_train_batches": 20, "limit_val_batches": 2, "gradient_clip_val": 1.0}
checkpointing = {"monitor": ["val_loss", "val_num_switches"], "dirpath": "runs/checkpoints/tracking_ctc"}
logging = {"logger_type": "TensorBoardLogger", "save_dir": "runs/logs/tracking_ctc"}
model_name = "tracking_ctc"
