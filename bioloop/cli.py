"""The `bioloop` command. Every command is thin: parse -> api call -> summary.

Errors map once, here: ConfigError -> exit 2, other BioloopError -> exit 1 (message only);
a config file that raises shows the user's own traceback; anything else is a bug and
shows a full traceback. torch is imported only inside commands, so --help is fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click

from bioloop._version import __version__

_EXAMPLES = Path(__file__).parent / "examples"


class _Group(click.Group):
    def invoke(self, ctx):
        from bioloop.errors import BioloopError, ConfigExecutionError

        try:
            return super().invoke(ctx)
        except ConfigExecutionError as exc:
            click.echo(exc.user_traceback.rstrip(), err=True)
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except BioloopError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


_override = click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
                         help="Override a setting (repeatable; dotted keys reach into sections).")
_quiet = click.option("-q", "--quiet", is_flag=True, help="No progress bars or progress messages.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bioloop")
def cli():
    """Train, predict and evaluate deep-learning models for biological imaging from one config file."""


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@_override
@click.option("--devices", type=click.IntRange(min=1), default=None,
              help="Processes to train with (DDP; one per GPU, or CPU processes with gloo).")
@_quiet
def train(config, overrides, devices, quiet):
    """Train the model a CONFIG file describes (resumes by default: load_model = 'latest')."""
    if devices and devices > 1 and "WORLD_SIZE" not in os.environ:
        sys.exit(_launch_distributed(config, overrides, devices, quiet))
    from bioloop import api

    result = api.train(config, overrides, quiet=quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        _print_train_summary(result)


def _launch_distributed(config, overrides, devices, quiet) -> int:
    """Re-run this command under torchrun with ``devices`` processes on this machine."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
               "-m", "bioloop", "train", str(config)]
    for item in overrides:
        command += ["-s", item]
    if quiet:
        command.append("--quiet")
    click.echo(f"launching {devices} processes: {' '.join(command[2:])}", err=True)
    return subprocess.call(command)


def _print_train_summary(result):
    click.echo(f"trained {result['epochs_completed']} epochs ({result['optimizer_steps']} optimizer steps)")
    for metric, info in result["best"].items():
        click.echo(f"best {metric}: {info['value']:.4f} at epoch {info['epoch']}")
    click.echo(f"checkpoints: {result['checkpoint_dir']}")
    click.echo(f"logs:        {result['run_dir']}  (tensorboard --logdir {result['run_dir']})")


def _shape(text):
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected integers 'z,y,x' (got {text!r})") from None
    if len(values) != 3 or min(values) < 1:
        raise click.BadParameter(f"expected three positive integers 'z,y,x' (got {text!r})")
    return values


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--input", "input_path", default=None, help="Raw volume: OME-NGFF group/array, zarr array or tif "
              "(local or s3://).")
@click.option("--crops", default=None, help="Instead of --input: predict every validate crop of this datasplit CSV.")
@click.option("--output", "output_path", required=True, help="Output OME-NGFF zarr folder (local).")
@click.option("--roi", default=None, help="World region in nm: 'z0:z1,y0:y1,x0:x1' (default: the whole volume).")
@click.option("--checkpoint", default=None, help="Checkpoint file (default: the run's best, else its latest).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Tiles per forward pass.")
@click.option("--block-shape", default=None, help="Voxels per block 'z,y,x' (memory is bounded by the block).")
@click.option("--overlap", type=click.FloatRange(0, 0.9), default=0.25, show_default=True,
              help="Tile overlap fraction (blended).")
@click.option("--tta", is_flag=True, help="Average over flips of the spatial axes (test-time augmentation).")
@click.option("--orthoplanes", is_flag=True, help="2D models: also predict along y and x and average the three.")
@click.option("--no-resume", is_flag=True, help="Refuse to continue an unfinished output instead of resuming it.")
@click.option("--devices", type=click.IntRange(min=1), default=None, help="Processes sharing the blocks (torchrun).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@_override
@_quiet
def predict(config, input_path, crops, output_path, roi, checkpoint, batch_size, block_shape, overlap, tta,
            orthoplanes, no_resume, devices, overwrite, overrides, quiet):
    """Predict a volume (blockwise, resumable) with a trained model; writes probabilities per class."""
    if devices and devices > 1 and "WORLD_SIZE" not in os.environ:
        ctx = click.get_current_context()
        arguments = ["predict", str(config)]
        for param in ctx.command.params:
            value = ctx.params.get(param.name)
            if param.name in ("config", "devices") or value in (None, False, ()):
                continue
            flag = param.opts[0]
            if param.is_flag:
                arguments.append(flag)
            elif param.multiple:
                for item in value:
                    arguments += [flag, str(item)]
            else:
                arguments += [flag, str(value)]
        sys.exit(_relaunch(arguments, devices))
    from bioloop import api

    path = api.predict(config, overrides, checkpoint=checkpoint, input=input_path, crops=crops, output=output_path,
                       roi=roi, batch_size=batch_size, block_shape=_shape(block_shape), overlap=overlap, tta=tta,
                       orthoplanes=orthoplanes, resume=not no_resume, overwrite=overwrite,
                       show_progress=not quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"prediction written to {path}")


def _relaunch(arguments, devices) -> int:
    """Re-run ``bioloop <arguments>`` under torchrun with ``devices`` processes on this machine."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
               "-m", "bioloop", *arguments]
    click.echo(f"launching {devices} processes: {' '.join(command[2:])}", err=True)
    return subprocess.call(command)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--prediction", required=True, help="Prediction written by `bioloop predict` or `bioloop process`.")
@click.option("--truth", default=None, help="Ground-truth crop group (one label image per class).")
@click.option("--crops", default=None, help="Datasplit CSV: score every validate crop (prediction/<crop>/<class>).")
@click.option("--kind", type=click.Choice(["auto", "semantic", "instance"]), default="auto", show_default=True,
              help="Score masks, instances, or decide from the prediction.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="Probability threshold (default: config).")
@click.option("--iou-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="IoU above which a predicted instance matches a true one.")
@click.option("--report", default=None, help="Also write the scores to this JSON file (and a CSV beside it).")
@_override
@_quiet
def evaluate(config, prediction, truth, crops, kind, threshold, iou_threshold, report, overrides, quiet):
    """Score a prediction against ground truth and print a table per class."""
    from bioloop import api
    from bioloop.errors import ConfigError

    if not truth and not crops:
        raise ConfigError.at("evaluate", "give --truth (a crop group) or --crops (a datasplit CSV)")
    result = api.evaluate(config, overrides, prediction=prediction, truth=truth, crops=crops, kind=kind,
                          threshold=threshold, iou_threshold=iou_threshold, report=report, show_progress=not quiet)
    click.echo(result["table"])
    if report:
        click.echo(f"report written to {report}")


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--input", "input_path", required=True, help="Probabilities written by `bioloop predict`.")
@click.option("--output", "output_path", required=True, help="Output zarr folder: masks and instance labels per class.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@_override
@_quiet
def process(config, input_path, output_path, overwrite, overrides, quiet):
    """Threshold, connected components, watershed and size filter (the config's `process` section)."""
    from bioloop import api

    path = api.process(config, overrides, input=input_path, output=output_path, overwrite=overwrite,
                       show_progress=not quiet)
    click.echo(f"processed labels written to {path}")


def _datasplit_options(func):
    from bioloop.data.datasplit_gen import DATASPLIT_OPTIONS

    for name, (convert, default, text) in reversed(list(DATASPLIT_OPTIONS.items())):
        flag = "--" + name.replace("_", "-")
        if convert is bool:
            func = click.option(flag, name, is_flag=True, help=text)(func)
            continue
        shown = default if not isinstance(default, list) else ",".join(default)
        func = click.option(flag, name, type=_Converted(convert, name), default=None, required=default is None and
                            name in ("search_path", "classes"),
                            help=f"{text}" + (f" [default: {shown}]" if default is not None else ""))(func)
    return func


class _Converted(click.ParamType):
    """A click type from a converter that raises ValueError on bad input."""

    def __init__(self, convert, name):
        self.convert_fn, self.name = convert, name

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.convert_fn(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@cli.command()
@_datasplit_options
@click.option("--anon", is_flag=True, help="Read s3:// search paths anonymously.")
def datasplit(anon, **options):
    """Crawl a search path for crops and write the csc-style train/validate CSV (split by dataset)."""
    from bioloop.data.datasplit_gen import DATASPLIT_OPTIONS, make_datasplit, summarize

    kwargs = {k: (DATASPLIT_OPTIONS[k][1] if v is None else v) for k, v in options.items()}
    result = make_datasplit(**kwargs, storage_options={"anon": True} if anon else None)
    click.echo(summarize(result))
    if not kwargs["dry_run"]:
        click.echo(f"wrote {kwargs['csv_path']}")


@cli.group(name="config", cls=_Group)
def config_group():
    """Inspect and validate config files."""


@config_group.command("show")
@click.argument("config", type=click.Path(dir_okay=False))
@_override
def config_show(config, overrides):
    """Print every resolved setting (defaults included; '*' marks values the file or -s changed)."""
    from bioloop import api
    from bioloop.config.resolved import format_settings

    cfg = api.load_config(config, overrides)
    click.echo(f"# {config} (task: {cfg.task}); '*' = set in the file or with -s")
    click.echo(format_settings(cfg))


@config_group.command("check")
@click.argument("config", type=click.Path(dir_okay=False))
@_override
def config_check(config, overrides):
    """Validate a config file without running anything."""
    from bioloop import api

    cfg = api.load_config(config, overrides)
    click.echo(f"{config}: OK (task {cfg.task})")


def _templates() -> list[str]:
    return sorted(p.stem for p in _EXAMPLES.glob("*.py") if not p.name.startswith("_"))


@cli.command()
@click.argument("template", required=False)
@click.argument("dest", required=False, type=click.Path())
def init(template, dest):
    """Copy the annotated example TEMPLATE to DEST (a file or a folder). Without arguments, list them."""
    from bioloop.config.structure import did_you_mean
    from bioloop.errors import ConfigError

    names = _templates()
    if not template:
        click.echo("templates:\n" + "\n".join(f"  {n}" for n in names))
        return
    if template not in names:
        raise ConfigError.at("init", f"unknown template '{template}'{did_you_mean(template, names)}",
                             fix=f"choose one of: {', '.join(names)}")
    target = Path(dest or f"{template}.py")
    if target.is_dir():
        target = target / f"{template}.py"
    if target.exists():
        raise ConfigError.at(str(target), "already exists; nothing was copied", fix="choose another destination")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_EXAMPLES / f"{template}.py", target)
    click.echo(f"wrote {target}; edit it, then run: bioloop train {target}")


@cli.command()
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, help="Seed of the generator.")
@click.option("--layout", type=click.Choice(["cellmap", "allen"]), default="cellmap", show_default=True,
              help="cellmap: OME-NGFF EM volume with label crops; allen: image/_GT/_CM tif triplets.")
def synthetic(dest, seed, layout):
    """Write a synthetic dataset to DEST (EM volume with nuclei/mitochondria crops, or Allen-style tifs)."""
    if layout == "allen":
        from bioloop.data.synthetic_allen import make_allen_dataset

        files = make_allen_dataset(dest, n=4, shape=(40, 128, 128), seed=seed)
        click.echo("\n".join("  ".join(str(f) for f in triplet if f) for triplet in files))
        return
    from bioloop.data.synthetic import make_em_dataset

    data = make_em_dataset(dest, seed=seed)
    click.echo(f"dataset: {data.zarr_path}\ndatasplit: {data.datasplit_path}\nheld-out crop: {data.test_crop_path}")


@cli.command()
@click.argument("task", type=click.Choice(["segmentation"]), default="segmentation")
@click.option("--output", default="demo_run", type=click.Path(file_okay=False), help="Folder for data and results.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the demo's epochs.")
@_quiet
def demo(task, output, epochs, quiet):
    """Generate data, train, predict a held-out region and evaluate it: a real run in minutes on CPU."""
    from bioloop.demo import run_demo

    run_demo(task, Path(output), epochs=epochs, quiet=quiet, echo=click.echo)


def main(argv=None):
    cli.main(args=argv, prog_name="bioloop")


if __name__ == "__main__":
    main()
