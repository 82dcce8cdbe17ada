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
from bioloop.config.cli_options import click_options, task_values

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
@click_options("predict")
@_override
@_quiet
def predict(config, overrides, quiet, **given):
    """Predict with a trained model: volumes blockwise and resumable (segmentation), videos and image
    folders to DLC-style CSV, .slp and overlay videos (pose), tracks of detections (tracking)."""
    from bioloop import api

    ctx = click.get_current_context()
    cfg = api.load_config(config, overrides)
    o = _task_values(ctx, "predict", cfg.task, given)
    common = dict(checkpoint=o["checkpoint"], input=o["input_path"], output=o["output_path"],
                  batch_size=o["batch_size"], overwrite=o["overwrite"], show_progress=not quiet)
    if cfg.task == "tracking":
        if not o["input_path"]:
            raise click.UsageError("--input is required: detections to track (.slp, CTC folder, MOT txt, ...)")
        path = api.predict(cfg, video=o["video"], detections=o["detections"], format=o["fmt"], **common)
        click.echo(f"tracks written to {path}")
        return
    if cfg.task != "segmentation":
        if not o["input_path"]:
            raise click.UsageError("--input is required: a video file or a folder of images")
        written = []
        path = api.predict(cfg, save_video=o["save_video"], slp_output=o["slp"], written=written, **common)
        click.echo("prediction written to " + ", ".join(map(str, written or [path])))
        return
    devices = o["devices"]
    if devices and devices > 1 and "WORLD_SIZE" not in os.environ:
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
    path = api.predict(cfg, crops=o["crops"], roi=o["roi"], block_shape=_shape(o["block_shape"]),
                       overlap=o["overlap"], tta=o["tta"], orthoplanes=o["orthoplanes"],
                       resume=not o["no_resume"], **common)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"prediction written to {path}")


def _task_values(ctx, command: str, task: str, given: dict) -> dict:
    """The options of ``task`` with its defaults; another task's flags are a UsageError."""
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    return task_values(command, task, given, flags)


def _relaunch(arguments, devices) -> int:
    """Re-run ``bioloop <arguments>`` under torchrun with ``devices`` processes on this machine."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
               "-m", "bioloop", *arguments]
    click.echo(f"launching {devices} processes: {' '.join(command[2:])}", err=True)
    return subprocess.call(command)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click_options("evaluate")
@_override
@_quiet
def evaluate(config, overrides, quiet, **given):
    """Score a prediction against ground truth and print a table (per class, or per keypoint)."""
    from bioloop import api
    from bioloop.errors import ConfigError

    cfg = api.load_config(config, overrides)
    o = _task_values(click.get_current_context(), "evaluate", cfg.task, given)
    prediction, truth, report = o["prediction"], o["truth"], o["report"]
    if cfg.task == "tracking":
        result = api.evaluate(cfg, prediction=list(prediction), truth=list(truth), report=report,
                              match=o["match"], match_threshold=o["match_threshold"],
                              untracked=o["untracked"], mask_pattern=o["mask_pattern"],
                              show_progress=not quiet, video=o["video"])
    else:
        if len(prediction) > 1 or len(truth) > 1:
            raise click.UsageError(f"one --prediction and one --truth for the {cfg.task} task")
        prediction, truth = prediction[0], (truth[0] if truth else None)
        if cfg.task != "segmentation":
            result = api.evaluate(cfg, prediction=prediction, truth=truth, report=report, split=o["split"])
        else:
            if not truth and not o["crops"]:
                raise ConfigError.at("evaluate", "give --truth (a crop group or a label image) or --crops (a "
                                     "datasplit CSV)")
            result = api.evaluate(cfg, prediction=prediction, truth=truth, crops=o["crops"], kind=o["kind"],
                                  threshold=o["threshold"], iou_threshold=o["iou_threshold"], report=report,
                                  figure=o["figure"], raw=o["raw"], show_progress=not quiet)
    click.echo(result["table"])
    if report:
        click.echo(f"report written to {report}")
    if result.get("figure"):
        click.echo(f"figure written to {result['figure']}")


@cli.command("view-batch")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--video", default=None, help="Tracking: the training videos: one file, a folder holding them, or "
              "OLD=NEW to remap the video paths the .slp files store (instead of dataset video_files).")
@_override
def view_batch(config, video, overrides):
    """Tracking: render a training clip's crops with their track ids to <run folder>/view_batch.png and TensorBoard."""
    from bioloop import api
    from bioloop.tasks import get_task

    cfg = api.load_config(config, overrides)
    task = get_task(cfg.task)
    path = task.view_batch(cfg, video=video) if video is not None else task.view_batch(cfg)
    click.echo(f"wrote {path}")  # tasks without it refuse with a ConfigError


@cli.command("ctc-fix")
@click.argument("src", type=click.Path(file_okay=False, exists=True))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--mask-pattern", default=None, help="Mask file names other than man_trackTTT.tif / maskTTT.tif, "
              "with '*' for the frame number (e.g. 'frame_*.tif'); the output uses the CTC names.")
def ctc_fix(src, dst, mask_pattern):
    """Relabel a Cell Tracking Challenge folder (GT TRA or RES) into a valid one at DST.

    A label that disappears and comes back gets a new label for each later segment, whose parent is
    the segment before; the track table is rebuilt from the masks, the masks get the CTC file names.
    Every change is printed."""
    from bioloop.tasks.tracking.ctc_tools import fix_ctc
    from bioloop.tasks.tracking.io_ctc import check_ctc

    fix_ctc(src, dst, pattern=mask_pattern, say=click.echo)
    problems = check_ctc(dst)  # written under the CTC names
    for line in problems:
        click.echo(f"still invalid: {line}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"valid CTC folder written to {dst}")


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
    """Validate a config file without training: settings, input files, and that the model builds."""
    from bioloop import api
    from bioloop.errors import ConfigError

    cfg = api.load_config(config, overrides)
    problems = api.check_config(cfg)
    if problems:
        raise ConfigError.many(problems)
    spelled = f", {cfg.source.spelling}'s spelling" if cfg.source and cfg.source.spelling else ""
    click.echo(f"{config}: OK (task {cfg.task}{spelled})")


def _templates() -> list[str]:
    return sorted(p.stem for p in _EXAMPLES.glob("*.py") if not p.name.startswith("_"))


@cli.command()
@click.argument("template", required=False)
@click.argument("dest", required=False, type=click.Path())
@click.option("--from", "from_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Write the bioloop Python config equivalent to another tool's YAML (Lightning Pose config.yaml, "
                   "DeepLabCut pytorch_config.yaml, DREEM/GTR); then TEMPLATE is the destination.")
def init(template, dest, from_file):
    """Copy the annotated example TEMPLATE to DEST (a file or a folder). Without arguments, list them.

    `bioloop init --from their.yaml my.py` writes my.py from another tool's config instead."""
    from bioloop.config.structure import did_you_mean
    from bioloop.errors import ConfigError

    if from_file:
        from bioloop.config.render import write_python_config

        target = Path(dest or template or Path(from_file).with_suffix(".py").name)
        write_python_config(Path(from_file), target)
        click.echo(f"wrote {target} from {from_file}; edit it, then run: bioloop train {target}")
        return

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
@click.option("--layout", type=click.Choice(["cellmap", "allen", "pose", "tracking", "cells"]), default="cellmap",
              show_default=True,
              help="cellmap: OME-NGFF EM volume with label crops; cells: a volume filled with touching cells and "
                   "their dense instance labels (like EM neurons); allen: image/_GT/_CM tif triplets; pose: rendered "
                   "animals with keypoints (labeled PNGs, CollectedData.csv, labels.slp, mp4 videos); tracking: "
                   "moving objects with ground-truth ids (tracking.slp + mp4, a CTC folder, MOTChallenge txt).")
@click.option("--animals", type=click.IntRange(min=1), default=None,
              help="pose: animals per frame [default: 1]; tracking: objects [default: 5].")
@click.option("--views", default=None,
              help="pose: a multi-camera project with these comma-separated views (e.g. top,side): one labels CSV "
                   "and <session>_<view>.mp4 videos per view, the same animal seen by each camera.")
def synthetic(dest, seed, layout, animals, views):
    """Write a synthetic dataset to DEST (EM volume with nuclei/mitochondria crops, Allen-style tifs, or pose)."""
    if views is not None and (layout != "pose" or animals not in (None, 1)):
        raise click.UsageError("--views makes a single-animal pose project: use it with --layout pose only")
    if layout == "allen":
        from bioloop.data.synthetic_allen import make_allen_dataset

        files = make_allen_dataset(dest, n=4, shape=(40, 128, 128), seed=seed)
        click.echo("\n".join("  ".join(str(f) for f in triplet if f) for triplet in files))
        return
    if layout == "tracking":
        from bioloop.data.synthetic_tracking import make_tracking_dataset

        data = make_tracking_dataset(dest, n_frames=200, n_objects=animals or 5, seed=seed)
        click.echo(f"SLEAP: {data.slp_path} + {data.video_path}\nCTC:   {data.ctc_root} (01, 01_GT/TRA)\n"
                   f"MOT:   {data.mot_txt}")
        return
    if layout == "pose" and views is not None:
        from bioloop.data.synthetic_pose import make_multiview_pose_dataset

        data = make_multiview_pose_dataset(dest, n_frames=16, n_sessions=12, image_size=(96, 96), label_every=2,
                                           views=tuple(v.strip() for v in views.split(",") if v.strip()), seed=seed)
        click.echo(f"labels: {', '.join(data.csv_paths)} ({len(data.keypoints)} labeled frames per view)\n"
                   f"videos: {Path(data.video_paths[0][0]).parent}")
        return
    if layout == "pose":
        from bioloop.data.synthetic_pose import make_pose_dataset

        # many short videos: scene variety teaches a model far more than frame count
        data = make_pose_dataset(dest, n_frames=16, n_videos=20, n_animals=animals or 1, label_every=2, seed=seed)
        click.echo(f"labels: {data.csv_path} and {data.slp_path} ({len(data.image_paths)} labeled frames)\n"
                   f"videos: {Path(data.video_paths[0]).parent}")
        return
    if layout == "cells":
        from bioloop.data.synthetic import make_cells_dataset

        cells = make_cells_dataset(dest, shape=(32, 160, 160), seed=seed)
        click.echo(f"dataset: {cells.zarr_path} ({cells.n_cells} cells)\ndatasplit: {cells.datasplit_path}\n"
                   f"held-out labels: {cells.test_labels_path}")
        return
    from bioloop.data.synthetic import make_em_dataset

    data = make_em_dataset(dest, seed=seed)
    click.echo(f"dataset: {data.zarr_path}\ndatasplit: {data.datasplit_path}\nheld-out crop: {data.test_crop_path}")


@cli.command()
@click.argument("task", type=click.Choice(["segmentation", "pose"]), default="segmentation")
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
