"""``bioloop predict`` / ``evaluate`` options of the segmentation task (defaults and help, once).

See ``bioloop.config.cli_options``; ``cli.py`` generates the click options from these tables.
"""

from __future__ import annotations

import click

from bioloop.config.cli_options import Option

PREDICT = (
    Option("--input", "input_path", "raw volume (OME-NGFF group/array, zarr array or tif; local "
           "or s3://)."),
    Option("--crops", "crops", "instead of --input: predict every validate crop of this "
           "datasplit CSV."),
    Option("--roi", "roi", "world region in nm 'z0:z1,y0:y1,x0:x1' (default: all)."),
    Option("--batch-size", "batch_size", "tiles per forward pass.", type=click.IntRange(min=1)),
    Option("--block-shape", "block_shape", "voxels per block 'z,y,x' (memory is bounded by it)."),
    Option("--overlap", "overlap", "tile overlap fraction (blended).",
           type=click.FloatRange(0, 0.9), default=0.25, show_default=True),
    Option("--tta", "tta", "average over flips of the spatial axes.", is_flag=True, default=False),
    Option("--orthoplanes", "orthoplanes", "2D models: also predict along y and x and average.",
           is_flag=True, default=False),
    Option("--no-resume", "no_resume", "refuse to continue an unfinished output.", is_flag=True,
           default=False),
    Option("--devices", "devices", "processes sharing the blocks (torchrun).",
           type=click.IntRange(min=1)),
)

EVALUATE = (
    Option("--truth", "truth", "ground-truth crop group (one label image per class) or one label "
           "image (tif, zarr array, OME-NGFF; instance ids, or class ids with "
           "label_layout='class_ids').", multiple=True),
    Option("--crops", "crops", "datasplit CSV; score every validate crop "
           "(prediction/<crop>/<class>)."),
    Option("--kind", "kind", "score masks, instances, or decide from the prediction.",
           type=click.Choice(["auto", "semantic", "instance"]), default="auto",
           show_default=True),
    Option("--threshold", "threshold", "probability threshold (default: config).",
           type=click.FloatRange(0, 1)),
    Option("--iou-threshold", "iou_threshold", "IoU above which a predicted instance matches a "
           "true one.", type=click.FloatRange(0, 1), default=0.5, show_default=True),
    Option("--figure", "figure", "write a PNG of raw, truth and prediction side by side for one "
           "z-slice of the first crop."),
    Option("--raw", "raw", "raw image for --figure (default: the one predict recorded)."),
)
