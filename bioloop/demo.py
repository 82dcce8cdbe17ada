"""`bioloop demo`: synthetic data -> train -> predict a held-out region -> evaluate."""

from __future__ import annotations

import shutil
from pathlib import Path

_EXAMPLES = Path(__file__).parent / "examples"

# Short enough for a few CPU minutes, long enough for nuclei IoU >= 0.8 on the synthetic data.
DEMO_EPOCHS = 8
DEMO_OVERRIDES = ("iterations_per_epoch=30", "batch_size=8", "validation_batch_limit=24", "early_stopping=None",
                  "num_workers=0", "load_model=None")


def run_demo(task: str, output: Path, *, epochs: int | None = None, quiet: bool = False, echo=print) -> dict:
    """Run the whole segmentation workflow in ``output``; returns the evaluation result."""
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
