"""``hpstudy`` command line: parse, call the public API, return an exit code.

The library logs (``logging.getLogger("hpstudy")``); the CLI makes sure its stdout handler is there and
prints the results of the commands. Exit codes: 0 success, 1 a user-fixable error (bad data, YAML,
study state; one line, no traceback), 2 a usage error (argparse).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hpstudy._io import write_problem
from hpstudy._log import install_default_handler
from hpstudy.errors import HpstudyError

__all__ = ["main", "build_parser"]


def _cmd_explore(args: argparse.Namespace) -> int:
    from hpstudy.data.explore import explore

    result = explore(args.data, out_dir=args.out, image_size=(args.image_size, args.image_size),
                     positive_class=args.positive_class, leak_check=args.leak_check)
    print(f"Exploration written to {result.out_dir} (summary: {result.summary})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from hpstudy.demo import run_demo

    run_demo(data=args.data, out_dir=args.out)
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from hpstudy.study import run_study

    distributed = None
    if args.workers or args.listen:
        from hpstudy.search.distributed import DistributedSettings

        distributed = DistributedSettings(workers=args.workers, listen=args.listen or "127.0.0.1:0",
                                          max_restarts=args.max_restarts, heartbeat_timeout=args.heartbeat_timeout,
                                          timeout=args.timeout)
    run_study(args.study, data=args.data, overrides=_with_trials_per_process(args), overwrite=args.overwrite,
              fit_verbose=args.verbose, distributed=distributed)
    return 0


def _with_trials_per_process(args: argparse.Namespace) -> list[str]:
    extra = [] if args.trials_per_process is None else [f"trials_per_process={args.trials_per_process}"]
    return [*args.set, *extra]


def _cmd_worker(args: argparse.Namespace) -> int:
    from hpstudy.search.distributed import run_worker

    outcome = run_worker(args.study, chief=args.chief, tuner_id=args.id, data=args.data,
                         overrides=_with_trials_per_process(args), fit_verbose=args.verbose, threads=args.threads,
                         connect_timeout=args.connect_timeout)
    if outcome.paused:  # trials_per_process: continue in a fresh process image (same PID, memory returned)
        from hpstudy.search.processes import child_environment

        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "hpstudy.cli", *args.argv], child_environment())
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from hpstudy.study import study_status

    print(study_status(args.study, top=args.top))
    return 0


def _cmd_extend(args: argparse.Namespace) -> int:
    from hpstudy.extend import extend_study

    extend_study(args.study, top_k=args.top_k, run=args.run, fit_verbose=args.verbose)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from hpstudy.study import export_trials

    print(f"Trials table written to {export_trials(args.study)}")
    return 0


def _cmd_confirm(args: argparse.Namespace) -> int:
    from hpstudy.selection import confirm_study

    confirm_study(args.study, data=args.data, overrides=args.set, overwrite=args.overwrite)
    return 0


def _cmd_finalize(args: argparse.Namespace) -> int:
    from hpstudy.finalize import finalize_study

    finalize_study(args.study, data=args.data, overrides=args.set, finetune=args.finetune)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from hpstudy.evaluate import evaluate_external, evaluate_study

    if args.external:
        evaluate_external(args.study, sets=args.external, model=args.model, force=args.force, data=args.data)
    else:
        evaluate_study(args.study, model=args.model, force=args.force, data=args.data)
    return 0


def _external_set(text: str) -> str:
    """argparse type: ``NAME=PATH`` (the library checks the name and the set)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"must look like NAME=PATH, e.g. hospital_b=data/hospital_b.zip, "
                                         f"but got {text!r}")
    return text


def _cmd_gradcam(args: argparse.Namespace) -> int:
    from hpstudy.explain import gradcam_study

    gradcam_study(args.study, model=args.model, per_group=args.per_group, layer=args.layer, data=args.data)
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from hpstudy.explain import probe_study

    probe_study(args.study, model=args.model, layer=args.layer, data=args.data, overrides=args.set)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from hpstudy.report import write_report

    result = write_report(args.studies, out_dir=args.out, explore_dir=args.explore, margin=args.margin)
    for sentence in result.missing:
        print(f"note: {sentence}")
    print(f"Report written to {result.html} (Markdown: {result.markdown})")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from hpstudy.repeats import compare_studies

    outcome = compare_studies(args.studies, repeats=args.repeats, budget_epochs=args.budget_epochs,
                              budget_seconds=args.budget_seconds, out_dir=args.out, data=args.data,
                              overrides=args.set, margin=args.margin, fit_verbose=args.verbose)
    print(outcome.verdict)
    print(f"Report written to {outcome.report.html} (Markdown: {outcome.report.markdown})")
    return 0


def _add_compare(sub: Any) -> None:
    compare = sub.add_parser("compare", help="compare oracles: each study searched R times at an equal budget, "
                                             "with error bars and a significance test")
    compare.add_argument("studies", nargs="+", help="two or more study YAML files (one family, objective and data)")
    compare.add_argument("--repeats", type=_positive, required=True, metavar="R",
                         help="repeats per study, each with its own seed (R >= 4 or 5 for a test to reach p < 0.05)")
    budget = compare.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-epochs", type=_positive_number, metavar="E",
                        help="equal budget: each repeat stops once its trials have trained E epochs in all")
    budget.add_argument("--budget-seconds", type=_positive_number, metavar="S",
                        help="equal budget: each repeat stops once its trials have trained S seconds in all")
    compare.add_argument("--out", default=None, help="report folder (default: compare-<names> beside the run "
                                                      "directories)")
    compare.add_argument("--data", help="data folder or .zip for every study (overrides the YAMLs' data)")
    compare.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a setting of every study, e.g. --set image_size=64 (repeatable)")
    compare.add_argument("--margin", type=float, default=0.01, help="'within margin of the best' (default: 0.01)")
    compare.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Keras fit verbosity in trials")
    compare.set_defaults(func=_cmd_compare)


def _positive_number(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number > 0, but got {text!r}")
    return value


def _add_study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="study definition YAML (e.g. studies/covid_cnn_hyperband.yaml)")


def _add_search(sub: Any) -> None:
    parser = sub.add_parser("search", help="create or resume a study and run its hyperparameter search")
    _add_study_args(parser)
    parser.add_argument("--data", help="data folder or .zip (overrides the YAML's data)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set oracle.max_trials=5 (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="delete the existing run of this study first")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Keras fit verbosity in trials")
    _add_trials_per_process(parser)
    group = parser.add_argument_group("distributed search (Keras Tuner chief/worker mode; see README)")
    group.add_argument("--workers", type=_count, default=0, metavar="N",
                       help="run the trials in N local worker processes (one GPU or a share of the CPU threads each)")
    group.add_argument("--listen", default=None, metavar="HOST:PORT",
                       help="serve the oracle here (default 127.0.0.1 on a free port); 0.0.0.0:PORT lets "
                            "`hpstudy worker` processes on other machines join")
    group.add_argument("--max-restarts", type=_count, default=3, metavar="K",
                       help="restart a dead local worker at most K times (it re-runs its trial)")
    group.add_argument("--heartbeat-timeout", type=float, default=300.0, metavar="SECONDS",
                       help="a worker silent this long counts as dead; its trial goes to another worker")
    group.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                       help="give up on a distributed search after this long (resume with the same command)")
    parser.set_defaults(func=_cmd_search)

    worker = sub.add_parser("worker", help="join a distributed search's chief and run trials for it")
    _add_study_args(worker)
    worker.add_argument("--chief", required=True, metavar="HOST:PORT", help="the chief's address (see its first line)")
    worker.add_argument("--id", default=None, help="worker id (default worker-<hostname>); restart a dead worker "
                        "with the same id to re-run its trial")
    worker.add_argument("--data", help="data folder or .zip on this machine (overrides the YAML's data)")
    worker.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for search")
    worker.add_argument("--threads", type=_count, default=None, help="TensorFlow threads (default: all cores)")
    worker.add_argument("--connect-timeout", type=float, default=600.0, metavar="SECONDS",
                        help="give up when the chief does not answer for this long")
    worker.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Keras fit verbosity in trials")
    _add_trials_per_process(worker)
    worker.set_defaults(func=_cmd_worker)


def _add_trials_per_process(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials-per-process", type=_count, default=None, metavar="N",
                        help="run N trials per process, then continue in a fresh one: TensorFlow keeps ~12 MiB "
                             "per trained model until its process ends (0 = one process; default: the study's "
                             "trials_per_process)")


def _whole(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, but got {text!r}")
        return value

    return parse


_count = _whole(0)
_positive = _whole(1)
_DATA_HELP = "data folder or .zip (default: the one the search used; its train/val images must be the same)"
_LATER_SET_HELP = ("a setting of the later stages, e.g. --set finalize.scale_epochs=true (repeatable); the rest "
                   "comes from the configuration the search froze in the run's study.yaml")


def _add_finalize_commands(sub: Any) -> None:
    finalize = sub.add_parser("finalize", help="retrain the best trial on train+val (and fine-tune a transfer model)")
    _add_study_args(finalize)
    finalize.add_argument("--data", help=_DATA_HELP)
    finalize.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_LATER_SET_HELP)
    finalize.add_argument("--finetune", action=argparse.BooleanOptionalAction, default=None,
                          help="fine-tune the backbone afterwards (default: yes for the transfer family)")
    finalize.set_defaults(func=_cmd_finalize)

    evaluate = sub.add_parser("evaluate", help="evaluate a finalized model on the test split, once")
    _add_study_args(evaluate)
    evaluate.add_argument("--model", default="final", choices=("final", "finetune"),
                          help="which model: final (retrained on train+val) or finetune (the fine-tuned transfer "
                               "model) (default: final)")
    evaluate.add_argument("--force", action="store_true", help="evaluate again (recorded in the ledger)")
    evaluate.add_argument("--data", help=_DATA_HELP)
    evaluate.add_argument("--external", action="append", type=_external_set, default=[], metavar="NAME=PATH",
                          help="evaluate on an external set instead of the test split: a folder or .zip with a test/ "
                               "split or the study's class folders at the top, checked for leaks against the study "
                               "first; once per model and NAME (repeatable)")
    evaluate.set_defaults(func=_cmd_evaluate)

    gradcam = sub.add_parser("gradcam", help="Grad-CAM of the TP/TN/FP/FN test groups")
    _add_study_args(gradcam)
    gradcam.add_argument("--model", default=None, choices=("final", "finetune"),
                         help="default: the best model by test ROC AUC in the ledger")
    gradcam.add_argument("--per-group", type=_positive, default=4, metavar="N",
                         help="images per group (TP, TN, FP, FN), the most confident first (default: 4)")
    gradcam.add_argument("--layer", default=None, help="convolutional layer (default: the last one)")
    gradcam.add_argument("--data", help=_DATA_HELP)
    gradcam.set_defaults(func=_cmd_gradcam)

    probe = sub.add_parser("probe", help="shortcut probes (occlusion, Grad-CAM mass, lung masks) on the test split, "
                                         "after the model's evaluation")
    _add_study_args(probe)
    probe.add_argument("--model", default="final", choices=("final", "finetune"),
                       help="which evaluated model (default: final)")
    probe.add_argument("--layer", default=None, help="Grad-CAM layer (default: the last convolutional one)")
    probe.add_argument("--data", help=_DATA_HELP)
    probe.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="probe regions, e.g. --set probes.center=0.6 --set probes.border=0.1 (fractions of "
                            "the image side; default: the study's probes section)")
    probe.set_defaults(func=_cmd_probe)


def _add_confirm(sub: Any) -> None:
    confirm = sub.add_parser("confirm", help="re-evaluate the best trials with new seeds before a winner is picked "
                                             "(study section selection: {top_k, seeds})")
    _add_study_args(confirm)
    confirm.add_argument("--data", help=_DATA_HELP)
    confirm.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="a setting of the later stages, e.g. --set selection.top_k=3 --set selection.seeds=3 "
                              "(repeatable)")
    confirm.add_argument("--overwrite", action="store_true",
                         help="delete the earlier re-evaluation runs first (to change selection once runs exist)")
    confirm.set_defaults(func=_cmd_confirm)


def _add_extend(sub: Any) -> None:
    extend = sub.add_parser("extend", help="write (and with --run search) a follow-up study whose flagged ranges "
                            "are extended, starting from this study's best trials")
    _add_study_args(extend)
    extend.add_argument("--run", action="store_true", help="search the follow-up at once (as `hpstudy search`)")
    extend.add_argument("--top-k", type=_positive, default=3, metavar="K",
                        help="how many of the study's best trials the follow-up tries first (default: 3)")
    extend.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Keras fit verbosity in trials")
    extend.set_defaults(func=_cmd_extend)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hpstudy`` command."""
    parser = argparse.ArgumentParser(
        prog="hpstudy", description="Rigorous, resumable Keras Tuner studies for medical-image classifiers. A "
        "study's run directory is created beside its YAML (studies/NAME.yaml -> studies/NAME/).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    explore = sub.add_parser("explore", help="Task 1: dataset statistics and figures")
    explore.add_argument("data", help="data folder or .zip with train/ val/ test/")
    explore.add_argument("--out", required=True, help="output folder")
    explore.add_argument("--image-size", type=_positive, default=128, metavar="PX",
                         help="side in pixels the images are resized to for the pixel statistics (default: 128)")
    explore.add_argument("--positive-class", default=None, metavar="NAME",
                         help="the class that counts as positive (default: the one named like covid)")
    explore.add_argument("--leak-check", default="warn", choices=("warn", "error", "off"),
                         help="images found in several splits: warn, stop with an error, or do not look "
                              "(default: warn)")
    explore.set_defaults(func=_cmd_explore)

    demo = sub.add_parser("demo", help="run the whole pipeline on synthetic phantom data (or --data)")
    demo.add_argument("--data", default=None, help="use real data instead of the synthetic phantom")
    demo.add_argument("--out", default="hpstudy-demo", help="output folder (default: ./hpstudy-demo)")
    demo.set_defaults(func=_cmd_demo)

    _add_search(sub)
    _add_confirm(sub)
    _add_extend(sub)
    _add_finalize_commands(sub)
    report = sub.add_parser("report", help="HTML/Markdown report of one study, or an oracle comparison of several")
    report.add_argument("studies", nargs="+", help="study YAML files (or study run directories)")
    report.add_argument("--out", required=True, help="output folder, e.g. reports/NAME")
    report.add_argument("--explore", default=None, help="an `hpstudy explore` output folder to include")
    report.add_argument("--margin", type=float, default=0.01, help="'within margin of the best' for comparisons")
    report.set_defaults(func=_cmd_report)
    _add_compare(sub)
    for name, func, text in (("status", _cmd_status, "progress, top trials and boundary flags"),
                             ("export", _cmd_export, "rebuild trials.csv from the tuner directory")):
        command = sub.add_parser(name, help=text)
        _add_study_args(command)
        if name == "status":
            command.add_argument("--top", type=_positive, default=5, metavar="N",
                                 help="how many of the best trials to list (default: 5)")
        command.set_defaults(func=func)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("hpstudy")
    except metadata.PackageNotFoundError:
        import hpstudy

        return hpstudy.__version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpstudy`` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    install_default_handler()
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except HpstudyError as exc:
        print(f"hpstudy {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a read-only folder: the user can fix it, nothing written is lost
        problem = write_problem(exc)
        if problem is None:
            raise
        print(f"hpstudy {args.command}: error: {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hpstudy {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
