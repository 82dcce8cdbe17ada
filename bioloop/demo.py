"""`bioloop demo`: synthetic data -> train -> predict a held-out region -> evaluate."""

from __future__ import annotations

import shutil
from pathlib import Path

_EXAMPLES = Path(__file__).parent / "examples"

# Short enough for a few CPU minutes, long enough for both classes (nuclei, and mitochondria at 1.8 % of the
# held-out voxels). Why the mitochondria used to fail: the example's 8-channel U-Net has too few full-resolution
# features to learn, in a few hundred steps, the cristae texture and elongated shape that tell mitochondria from
# vesicles and membranes, and uniform patches show a mitochondrion in few batches; whether it got there depended
# on the seed (at random_seed 7 the held-out probabilities stayed at 0.08-0.43: "never predicted"). pos_weight,
# output bias init, plain BCE and lr 3e-3 did not help; neither did GroupNorm or no norm (with foreground
# sampling: mito IoU still 0 after 3 of 8 epochs). What helps: 16 base channels, half of the patches centred on
# a voxel of a randomly chosen class (foreground_sampling = 0.5), and twice the optimizer steps with half the
# batch. Held-out crop, threshold 0.5; flood baseline ("mito everywhere outside nuclei") has mito IoU 0.022.
# Wall time: the whole `bioloop demo` on a shared 2-core box, two runs at once; same-load pairs: 195 s (before,
# seed 42) vs 177 s (16 ch, 3 x 60 x 4, seed 42); 215 s (before, seed 0) vs 189 s (this demo, seed 0);
# 161 s (before, seed 1) vs 144 s (this demo, seed 2).
# Alone on a quiet box with batched patch cutting: 63 s (before, seed 7) vs 66 s (this demo, seed 7; same
# scores as per-sample cutting), so about today's time, 5 % more.
#   model, patches, epochs x batches x batch size     seed  mito IoU  precision  recall  nuc IoU  wall
#   8 ch, uniform, 8 x 60 x 4 (before)                  42    0.64      0.66       0.96    0.98     195 s
#   8 ch, uniform, 8 x 60 x 4 (before)                   7    0.00      -          0.00    0.98
#   8 ch, uniform, 8 x 60 x 4 (before)                   0    0.00      -          0.00    0.98     215 s
#   8 ch, uniform, 8 x 60 x 4 (before)                   1    0.67      0.69       0.96    0.99     161 s
#   16 ch, uniform, 3 x 60 x 4                           7    0.40      0.40       0.98    0.97
#   16 ch, foreground 0.5, 3 x 60 x 4                    7    0.62      0.63       0.98    0.98
#   16 ch, foreground 0.5, 3 x 60 x 4                   42    0.50      0.51       0.97    0.97     177 s
#   16 ch, foreground 0.5, 3 x 120 x 2 (this demo)      42    0.65      0.66       0.97    0.99     168 s
#   16 ch, foreground 0.5, 3 x 120 x 2 (this demo)       7    0.61      0.62       0.98    0.97     161 s
#   16 ch, foreground 0.5, 3 x 120 x 2 (this demo)       0    0.59      0.60       0.97    0.96     189 s
#   16 ch, foreground 0.5, 3 x 120 x 2 (this demo)       1    0.60      0.64       0.91    0.99     147 s *
#   (* beside a test run, not a demo)
#   16 ch, foreground 0.5, 3 x 120 x 2 (this demo)       2    0.00      -          0.00    0.98     144 s
# So 4 of 5 seeds learn the mitochondria now (2 of 4 before); at random_seed 2 they still collapse to "never
# predicted" (mito IoU 0 from the first epoch on): a longer run or more channels
# are the next things to try (foreground_sampling = 0.9 does not rescue seed 2: mito 0, nuc 0.85; at seed 7 it
# gives mito 0.58, no better than 0.5).
# Recall stays near 0.97 while precision is ~0.65 (as in the old setting's best seed): the remaining error is
# false positives, about a third of them within 3 px of a mitochondrion (in-plane), the rest elsewhere.
DEMO_EPOCHS = 3
DEMO_OVERRIDES = ("iterations_per_epoch=120", "batch_size=2", "validation_batch_limit=24", "early_stopping=None",
                  "num_workers=0", "load_model=None", "model_kwargs={'depth': 4, 'base_channels': 16}",
                  "foreground_sampling=0.5")


# Pose: the pose_heatmap example at a CPU-sized resolution, evaluated on a video it never saw.
# Scene variety matters more than frame count: 20 short videos train far better than 4 long ones.
POSE_EPOCHS = 20
POSE_OVERRIDES = ("iterations_per_epoch=20", "batch_size=8", "num_workers=0", "load_model=None",
                  "train_prob=0.9", "val_prob=0.1", "eval.predict_vids_after_training=False")


def run_demo(task: str, output: Path, *, epochs: int | None = None, quiet: bool = False, echo=print) -> dict:
    """Run the whole workflow of ``task`` in ``output``; returns the evaluation result."""
    if task == "pose":
        return run_pose_demo(output, epochs=epochs, quiet=quiet, echo=echo)
    from bioloop import api
    from bioloop.data.synthetic import make_em_dataset

    output.mkdir(parents=True, exist_ok=True)
    echo(f"[1/4] writing synthetic EM data to {output / 'data'}")
    data = make_em_dataset(output / "data")
    shutil.rmtree(output / "runs", ignore_errors=True)  # the demo's own earlier results
    config = output / "segmentation_2d.py"
    shutil.copyfile(_EXAMPLES / "segmentation_2d.py", config)
    epochs = epochs or DEMO_EPOCHS
    overrides = [*DEMO_OVERRIDES, f"epochs={epochs}",
                 f"scheduler={{'type': 'CosineAnnealingLR', 'params': {{'T_max': {epochs}}}}}"]
    cfg = api.load_config(config, overrides)
    echo(f"[2/4] training a 2D U-Net on CPU ({cfg.epochs} epochs x {cfg.iterations_per_epoch} batches)")
    result = api.train(cfg, quiet=quiet)
    start, stop = data.test_roi
    roi = ",".join(f"{a:g}:{b:g}" for a, b in zip(start, stop))
    prediction = output / "prediction.zarr"
    echo(f"[3/4] predicting the held-out region {roi} (nm)")
    api.predict(cfg, input=data.raw_path, output=str(prediction), roi=roi, overwrite=True, show_progress=not quiet)
    echo("[4/4] evaluating against the held-out ground truth")
    scores = api.evaluate(cfg, prediction=str(prediction), truth=data.test_crop_path,
                          report=str(output / "evaluation.json"))
    echo(scores["table"])
    echo(f"TensorBoard logs: {result['run_dir']}   (tensorboard --logdir {result['run_dir']})")
    echo(f"checkpoints:      {result['checkpoint_dir']}")
    echo(f"prediction:       {prediction}")
    echo(f"report:           {output / 'evaluation.json'}")
    return scores


def run_pose_demo(output: Path, *, epochs: int | None = None, quiet: bool = False, echo=print) -> dict:
    """Synthetic animals -> train a heatmap model -> predict a held-out video -> evaluate its labeled frames."""
    from bioloop import api
    from bioloop.data.synthetic_pose import make_pose_dataset

    output.mkdir(parents=True, exist_ok=True)
    echo(f"[1/4] rendering synthetic animals with known keypoints to {output / 'data'}")
    make_pose_dataset(output / "data" / "pose", n_frames=8, n_videos=20, seed=0)
    heldout = make_pose_dataset(output / "data" / "heldout", n_frames=40, n_videos=1, seed=99)
    shutil.rmtree(output / "runs", ignore_errors=True)  # the demo's own earlier results
    config = output / "pose_heatmap.py"
    shutil.copyfile(_EXAMPLES / "pose_heatmap.py", config)
    epochs = epochs or POSE_EPOCHS
    cfg = api.load_config(config, [*POSE_OVERRIDES, f"epochs={epochs}",
                                   f"scheduler={{'type': 'CosineAnnealingLR', 'params': {{'T_max': {epochs}, "
                                   "'eta_min': 1e-4}}"])
    echo(f"[2/4] training a {cfg.backbone} heatmap model on CPU ({cfg.epochs} epochs x {cfg.iterations_per_epoch} "
         "batches)")
    result = api.train(cfg, quiet=quiet)
    echo("[3/4] predicting the held-out video (CSV, .slp and an overlay mp4) and its labeled frames")
    video = api.predict(cfg, input=heldout.video_paths[0], output=str(output / "heldout_video.csv"),
                        slp_output=str(output / "heldout_video.slp"), save_video=True, overwrite=True,
                        show_progress=not quiet)
    frames = api.predict(cfg, input=str(Path(heldout.image_paths[0]).parent), output=str(output / "heldout.csv"),
                         overwrite=True, show_progress=not quiet)
    echo("[4/4] evaluating against the held-out labels (frame pixels)")
    scores = api.evaluate(cfg, prediction=str(frames), truth=heldout.csv_path, report=str(output / "evaluation.json"))
    echo(scores["table"])
    echo(f"TensorBoard logs: {result['run_dir']}   (tensorboard --logdir {result['run_dir']})")
    echo(f"checkpoints:      {result['checkpoint_dir']}")
    echo(f"predictions:      {video}, {output / 'heldout_video.slp'}, {Path(video).with_suffix('.labeled.mp4')}")
    echo(f"report:           {output / 'evaluation.json'}")
    return scores
