"""`bioloop demo`: synthetic data -> train -> predict a held-out region -> evaluate."""

from __future__ import annotations

import shutil
from pathlib import Path

_EXAMPLES = Path(__file__).parent / "examples"

# Short enough for a few CPU minutes, long enough for both classes (nuclei, and mitochondria at 1.5 % of the
# voxels). A rare class needs optimizer steps more than samples: Adam moves the output logits by about the
# learning rate per step, and from p = 0.5 at the start 240 steps of 8 patches left the mitochondria flooded
# (held-out IoU 0.29, precision 0.29); the same patches in 480 steps of 4 reach IoU 0.64. Still fragile: with
# random_seed = 7 the mitochondria collapse to "never predicted" instead (a longer run is the real cure).
DEMO_EPOCHS = 8
DEMO_OVERRIDES = ("iterations_per_epoch=60", "batch_size=4", "validation_batch_limit=24", "early_stopping=None",
                  "num_workers=0", "load_model=None")


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
