"""``bioloop predict`` / ``evaluate`` options of the pose task (defaults and help, once).

See ``bioloop.config.cli_options``; ``cli.py`` generates the click options from these tables.
"""

from __future__ import annotations

import click

from bioloop.config.cli_options import Option

PREDICT = (
    Option("--input", "input_path", "a video file or a folder of images; multi-view projects: one view's "
           "<session>_<view> video or labels CSV (one CSV per view is written)."),
    Option("--batch-size", "batch_size", "frames per forward pass.", type=click.IntRange(min=1)),
    Option("--slp", "slp", "also write the predictions as a SLEAP .slp file."),
    Option("--save-video/--no-save-video", "save_video", "videos: also write an mp4 with keypoint "
           "overlays [default: eval.save_vids_after_training]."),
)

EVALUATE = (
    Option("--truth", "truth", "a labels file (default: the config's labels_file).",
           multiple=True),
    Option("--split", "split", "score only the labeled frames of this split of the run (its "
           "split.csv) [default: all].", type=click.Choice(["train", "val", "test", "all"])),
)
