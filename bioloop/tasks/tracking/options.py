"""``bioloop predict`` / ``evaluate`` options of the tracking task (defaults and help, once).

See ``bioloop.config.cli_options``; ``cli.py`` generates the click options from these tables.
"""

from __future__ import annotations

import click

from bioloop.config.cli_options import Option

PREDICT = (
    Option("--input", "input_path", "detections to track (.slp, CTC folder, MOT txt, TrackMate "
           "CSV, or a video with --detections)."),
    Option("--batch-size", "batch_size", "instances per forward pass.",
           type=click.IntRange(min=1)),
    Option("--video", "video", "the video (or image folder) of a .slp or MOT input; for a .slp "
           "also a folder holding its videos, or OLD=NEW to remap the stored video paths."),
    Option("--detections", "detections", "a .slp of detections when --input is a video."),
    Option("--format", "fmt", "output format [default: the input's; MOT for TrackMate].",
           type=click.Choice(["slp", "ctc", "mot"])),
)

EVALUATE = (
    Option("--truth", "truth", "tracked ground truth (.slp, CTC folder or dataset root, MOT txt "
           "or MOTChallenge folder, TrackMate CSV); repeatable.", multiple=True),
    Option("--match", "match", "match instances by box IoU [default], centroid distance, or (CTC "
           "folders) masks as DET/TRA do.", type=click.Choice(["iou", "centroid", "mask"])),
    Option("--match-threshold", "match_threshold", "least IoU [default: 0.5], or most pixels "
           "apart with --match centroid (required).", type=click.FloatRange(min=0)),
    Option("--untracked", "untracked", "predicted instances without a track count as one-frame "
           "tracks [count] or are left out (the count is printed).",
           type=click.Choice(["count", "exclude"]), default="count"),
    Option("--mask-pattern", "mask_pattern", "CTC mask file names other than man_trackTTT.tif / "
           "maskTTT.tif, with '*' for the frame number (e.g. 'frame_*.tif')."),
    Option("--video", "video", "the truth's video, a folder holding its videos, or OLD=NEW to "
           "remap the video paths a .slp stores."),
)
