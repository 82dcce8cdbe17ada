"""CTC scoring time: bioloop's ``ctc_scores`` vs py-ctcmetrics' ``evaluate_sequence`` on the same folders.

A generated sequence (40 frames of 512 x 512, 60 cells on a grid drifting up to 20 px; in the result
every third cell is shifted by 2 px, every seventh by 7 px, so it is missed) is written once; both tools score it (DET, TRA, CT, TF, BC(3), CCA),
alternating, three times each. Prints the per-run times, the ratio of the medians and both TRAs.

    python tools/bench/bench_ctc_scores.py
"""

from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from bioloop.tasks.tracking.metrics_ctc import ctc_scores


def _write(root: Path, frames: int = 40, side: int = 512, cells: int = 60) -> None:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(8) * 60 + 20, np.arange(8) * 60 + 20), -1).reshape(-1, 2)[:cells]
    drift = rng.uniform(-0.5, 0.5, (cells, 2))
    for name, prefix, table, shift in (("01_GT/TRA", "man_track", "man_track.txt", False),
                                       ("01_RES", "mask", "res_track.txt", True)):
        folder = root / name
        folder.mkdir(parents=True)
        for t in range(frames):
            mask = np.zeros((side, side), np.uint16)
            for k in range(cells):
                r, c = (grid[k] + t * drift[k]).astype(int)
                if shift:
                    c += 7 if k % 7 == 0 else 2 if k % 3 == 0 else 0
                mask[r:r + 12, c:c + 12] = k + 1
            tifffile.imwrite(folder / f"{prefix}{t:03d}.tif", mask)
        (folder / table).write_text("".join(f"{k + 1} 0 {frames - 1} 0\n" for k in range(cells)))


def main() -> None:
    from ctc_metrics.scripts.evaluate import evaluate_sequence

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write(root)
        ours, theirs = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            mine = ctc_scores(root / "01_GT" / "TRA", root / "01_RES")
            t1 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                ref = evaluate_sequence(str(root / "01_RES"), str(root / "01_GT"),
                                        metrics=["DET", "TRA", "CT", "TF", "BC(3)", "CCA"], threads=1)
            t2 = time.perf_counter()
            ours.append(t1 - t0)
            theirs.append(t2 - t1)
    print("bioloop ctc_scores s:       ", " ".join(f"{x:.2f}" for x in ours))
    print("py-ctcmetrics evaluate s:   ", " ".join(f"{x:.2f}" for x in theirs))
    print(f"time ratio bioloop / py-ctcmetrics (medians): {statistics.median(ours) / statistics.median(theirs):.2f}")
    print(f"TRA bioloop {mine['TRA']:.9f}  py-ctcmetrics {ref['TRA']:.9f}")


if __name__ == "__main__":
    main()
