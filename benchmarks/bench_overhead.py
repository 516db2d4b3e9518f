"""Useful-work fraction of the shipped CNN Hyperband study at 128 px, and the wall time before vs after issue 15.

``studies/covid_cnn_hyperband.yaml`` as shipped (trials_per_process 5, leak check, Hyperband factor 3,
patience 5) with a small budget (``oracle.max_epochs`` 9: 23 trials, at most 70 epochs) runs through the
CLI in fresh processes. The *after* side is this checkout: its trials table holds ``useful_s`` and
``overhead_s`` and their parts, summed here. With ``--before PATH`` (a checkout without the issue-15
changes, e.g. ``/work/main``) the same study also runs with that hpstudy, alternating with this one: same
seeds, so the same trials, epochs and scores, and the difference in wall time is the fixed cost saved. The
*before* checkout does not measure useful seconds, so its fraction is estimated with the after side's
useful seconds (the same epochs of the same models) over its own wall time, and printed as an estimate.

    python benchmarks/bench_overhead.py --before /work/main
    python benchmarks/bench_overhead.py --quick
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import _common as c  # noqa: I001 - sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads
import pandas as pd

_PARTS = ("start_s", "build_s", "trace_s", "checkpoint_s")


def _study(folder: Path, data: Path, size: int, max_epochs: int) -> Path:
    import yaml

    study = yaml.safe_load((c.ROOT / "studies" / "covid_cnn_hyperband.yaml").read_text())
    study["oracle"]["max_epochs"] = max_epochs
    study.update(data=str(data), image_size=[size, size], search_space=str(c.ROOT / "search_spaces" /
                                                                                 "baseline_cnn.yaml"))
    return c.write_yaml(folder / "covid_cnn_hyperband.yaml", study)


def _search(study: Path, package_root: Path) -> tuple[float, pd.DataFrame]:
    command = [sys.executable, "-c", "import sys; from hpstudy.cli import main; sys.exit(main())", "search",
               str(study), "--overwrite"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package_root), os.environ.get("PYTHONPATH", "")]),
           "PYTHONDONTWRITEBYTECODE": "1"}  # leave the other checkout as it is
    with c.timer() as t:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=study.parent)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return t[0], pd.read_csv(study.parent / study.stem / "trials.csv", dtype={"trial_id": str})


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=None, help="pixels (default 128, --quick 32)")
    p.add_argument("--max-epochs", type=int, default=None, help="Hyperband max_epochs (default 9, --quick 3)")
    p.add_argument("--before", type=Path, default=None, help="a checkout of hpstudy without the issue-15 changes")
    args = p.parse_args()
    size, max_epochs = args.image_size or (32 if args.quick else 128), args.max_epochs or (3 if args.quick else 9)
    c.header("overhead: useful-work fraction of the shipped CNN Hyperband study", args)
    data, folder = c.data_folder(args), c.workdir(args, "overhead")
    print(f"data: {data}, {size} px, studies/covid_cnn_hyperband.yaml with oracle.max_epochs={max_epochs}", flush=True)
    sides = {"after": c.ROOT, **({"before": args.before.resolve()} if args.before else {})}
    results = {}
    for label, root in sides.items():
        results[label] = _search(_study(folder / label, data, size, max_epochs), root)
        print(f"  {label} ({root}): {results[label][0]:.1f} s, {len(results[label][1])} trials", flush=True)
    _report(results)


def _report(results: dict[str, tuple[float, pd.DataFrame]]) -> None:
    wall, after = results["after"]
    useful, trials_wall = after["useful_s"].sum(), after["wall_s"].sum()
    epochs = after["epochs_run"].sum()
    print(f"\n-- after: {len(after)} trials, {epochs:.0f} epochs, search wall {wall:.1f} s (CLI process), trials' "
          f"wall {trials_wall:.1f} s")
    met = "met" if useful / wall >= 0.85 else "NOT met"
    print(f"useful {useful:.1f} s; useful-work fraction {useful / trials_wall:.3f} of the trials' wall time, "
          f"{useful / wall:.3f} of the CLI's wall time (target >= 0.85: {met})")
    overhead = {part: after[part].sum() for part in _PARTS}
    rest = trials_wall - useful - sum(overhead.values())
    print("overhead: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in overhead.items())
          + f", other (fit set-up, datasets, tuner and table bookkeeping, cleanup) {rest:.1f} s")
    print(f"per trial: median wall {after['wall_s'].median():.2f} s, useful {after['useful_s'].median():.2f} s, "
          f"trace {after['trace_s'].median():.2f} s, build {after['build_s'].median():.2f} s")
    if "before" not in results:
        return
    before_wall, before = results["before"]
    same = before["score"].round(6).tolist() == after["score"].round(6).tolist()
    print(f"\n-- before: search wall {before_wall:.1f} s vs after {wall:.1f} s: after/before {wall / before_wall:.3f} "
          f"({before_wall - wall:+.1f} s saved); same trials and scores: {same}")
    print(f"estimated useful-work fraction before (the after side's useful seconds over the before wall): "
          f"{useful / before_wall:.3f}")


if __name__ == "__main__":
    main()
