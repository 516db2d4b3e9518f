"""Issue 13: how much a winner chosen on one seed is worth, and one repeated oracle comparison.

Part 1 (selection noise): ``--studies N`` random-search studies of the baseline CNN on xray-course (each its
own seed), then ``hpstudy confirm`` with ``selection: {top_k: K, seeds: S}``. Printed per study: the search's
single-run winner, the winner after re-evaluation (best mean over S new seeds), whether it stayed the winner,
and the sd of a configuration's val AUC across seeds (every candidate's, then the median).

Part 2 (oracle comparison): Hyperband vs random vs Bayesian, ``--repeats R`` each at an equal epoch budget
(``hpstudy compare``), its verdict and tables; the HTML report path is printed.

    python benchmarks/bench_selection_noise.py                 # xray-course, 64 px (about an hour on 2 cores)
    python benchmarks/bench_selection_noise.py --quick         # xray-sample, 32 px, tiny budgets (minutes)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import _common

SPACE = _common.ROOT / "search_spaces" / "baseline_cnn.yaml"
ORACLES = {
    "hyperband": "{type: hyperband, max_epochs: %(epochs)d, factor: 3, iterations: 1}",
    "random": "{type: random, max_trials: %(trials)d, epochs: %(epochs)d}",
    "bayesian": "{type: bayesian, max_trials: %(trials)d, epochs: %(epochs)d}",
}


def write_study(folder: Path, name: str, oracle: str, *, seed: int, image_size: int, patience: int) -> Path:
    """A study YAML of the shipped baseline-CNN space with the given oracle (flow style keeps it short)."""
    text = (f"name: {name}\nfamily: baseline_cnn\nsearch_space: {SPACE}\noracle: {oracle}\n"
            f"objective: {{name: val_auc, direction: max}}\n"
            f"early_stopping: {{monitor: val_auc, patience: {patience}, restore_best_weights: true}}\n"
            f"seed: {seed}\nimage_size: {image_size}\nnormalization: dataset\n"
            "augmentation: {rotation: 10, shift: 0.1, zoom: 0.1}\nweights: none\nleak_check: off\n")
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def selection_noise(args: Any, data: Path, folder: Path) -> list[dict[str, Any]]:
    import hpstudy

    rows = []
    for index in range(args.studies):
        oracle = ORACLES["random"] % {"trials": args.trials, "epochs": args.epochs}
        study = write_study(folder, f"noise{index}", oracle, seed=101 + index, image_size=args.image_size,
                            patience=args.patience)
        with _common.timer() as search:
            hpstudy.run_study(study, data=data, verbose=False)
        with _common.timer() as confirm:
            chosen = hpstudy.confirm_study(study, overrides=[f"selection.top_k={args.top_k}",
                                                             f"selection.seeds={args.seeds}"])
        rows.append(_noise_row(index, chosen, search[0], confirm[0]))
        print(_noise_line(rows[-1]), flush=True)
    return rows


def _noise_row(index: int, chosen: Any, search_s: float, confirm_s: float) -> dict[str, Any]:
    first = chosen.candidate(chosen.single_run_winner)
    best = chosen.candidate(chosen.winner)
    return {"study": index, "single_run_winner": chosen.single_run_winner, "single_score": first.search_score,
            "single_mean": first.mean, "winner": chosen.winner, "winner_mean": best.mean, "winner_sd": best.sd,
            "stayed": not chosen.rank_changed, "sds": [c.sd for c in chosen.candidates if c.sd is not None],
            "optimism": [c.search_score - c.mean for c in chosen.candidates if c.mean is not None],
            "search_s": search_s, "confirm_s": confirm_s, "sentence": chosen.sentence}


def _noise_line(row: dict[str, Any]) -> str:
    sds = ", ".join(f"{sd:.3f}" for sd in row["sds"])
    return (f"study {row['study']}: search winner {row['single_run_winner']} ({row['single_score']:.3f}; re-evaluated "
            f"{row['single_mean']:.3f}), winner after re-evaluation {row['winner']} ({row['winner_mean']:.3f} ± "
            f"{row['winner_sd']:.3f}), stayed: {'yes' if row['stayed'] else 'NO'}; candidate sds {sds}; "
            f"search {row['search_s']:.0f} s, confirm {row['confirm_s']:.0f} s")


def summarize_noise(rows: list[dict[str, Any]]) -> None:
    sds = [sd for row in rows for sd in row["sds"]]
    optimism = [o for row in rows for o in row["optimism"]]
    stayed = sum(row["stayed"] for row in rows)
    print(f"\nsingle-seed winner stayed the winner in {stayed} of {len(rows)} studies")
    if sds:
        print(f"sd of a configuration's val AUC across seeds: median {statistics.median(sds):.4f} "
              f"(min {min(sds):.4f}, max {max(sds):.4f}, {len(sds)} configurations)")
    if optimism:
        print(f"search score minus re-evaluated mean: median {statistics.median(optimism):+.4f} "
              f"(min {min(optimism):+.4f}, max {max(optimism):+.4f})")


def oracle_comparison(args: Any, data: Path, folder: Path) -> Any:
    import hpstudy

    studies = [write_study(folder, f"cmp_{name}", template % {"trials": 10_000, "epochs": args.epochs}, seed=7,
                           image_size=args.image_size, patience=args.patience)
               for name, template in ORACLES.items()]
    with _common.timer() as clock:
        outcome = hpstudy.compare_studies(studies, repeats=args.repeats, budget_epochs=args.budget_epochs, data=data,
                                          out_dir=folder / "compare-report", verbose=False)
    data_ = outcome.data
    print(f"\n{args.repeats} repeats x {len(studies)} oracles at {args.budget_epochs} epochs each: "
          f"{clock[0] / 60:.1f} min")
    for title, table in (("final best val AUC", data_.score_table()), ("pairwise tests", data_.pair_table()),
                         ("to within the margin", data_.margin_table())):
        print(f"\n{title}:\n{table.to_string(index=False)}")
    print(f"\nverdict: {outcome.verdict}\nreport: {outcome.report.html}")
    return outcome


def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=3, help="studies for the selection-noise part (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="repeats per oracle in the comparison (default 3)")
    p.add_argument("--skip", choices=("noise", "compare"), default=None, help="leave one part out")
    args = p.parse_args()
    quick = args.quick
    args.image_size = 32 if quick else 64
    args.trials, args.epochs, args.patience = (3, 2, 1) if quick else (8, 6, 2)
    args.top_k, args.seeds = (2, 2) if quick else (3, 3)
    args.budget_epochs = 6 if quick else 36
    data, folder = _common.data_folder(args), _common.workdir(args, "selection-noise")
    _common.header("selection noise and a repeated oracle comparison", args)
    print(f"data {data}, {args.image_size} px, work dir {folder}", flush=True)
    if args.skip != "noise":
        summarize_noise(selection_noise(args, data, folder))
    if args.skip != "compare":
        oracle_comparison(args, data, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
