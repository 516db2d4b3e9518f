"""The shortcut probes of an evaluated model in the report: one verdict sentence per probe, and the figure."""

from __future__ import annotations

from hpstudy.records import read_probes
from hpstudy.report.assets import Assets
from hpstudy.report.document import Block, Figure, Note, Para
from hpstudy.report.runs import StudyRun

__all__ = ["probe_blocks"]

_STATUS = {True: "FLAGGED", False: "not flagged", None: "not assessed"}


def probe_blocks(run: StudyRun, model: str, assets: Assets) -> list[Block]:
    """The probes of ``model`` (``evaluation/<model>/probes.json`` and ``probes.png``), or how to run them."""
    record = read_probes(run.paths, model)
    if not record:
        return [Note(f"No shortcut probes for the {model} model yet: run `hpstudy probe {run.command_target} "
                     f"--model {model}` (after its evaluation; it does not count as one).")]
    regions = record.get("regions") or {}
    blocks: list[Block] = [Para(
        f"Shortcut probes of the {model} model on the {record.get('n_test', '?')} test images: "
        f"{_STATUS.get(record.get('flagged'), 'not assessed')} (central box {regions.get('center')} and border band "
        f"{regions.get('border')} of the image side; hidden regions filled with {regions.get('fill', '?')}; "
        "rules in `hpstudy.probes`).")]
    blocks += [Para(sentence) for sentence in record.get("verdicts") or []]
    figure = run.paths.probes_figure(model)
    if figure.is_file():
        blocks.append(Figure(assets.copy(figure, f"{model}_probes.png"),
                             f"Shortcut probes ({model} model): the regions, the test ROC AUC with each hidden, and "
                             "the share of Grad-CAM mass per group against the share of area"))
    return blocks
