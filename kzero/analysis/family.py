"""The zero-initialisation family side by side: the report section that puts
ZerO, Fixup, SkipInit / ReZero, zero-gamma and the paper's scheme beside the
reference inits, per model, from the runs of the experiments in `FAMILY`
(flags/family_*.flags and flags/cifar_resnet20.flags), with its figure.

Every number is computed from the runs; the target accuracies are choices,
stated in the section.
"""

import math
import os

from kzero.analysis.plots import figure
from kzero.analysis.report import planned_epochs
from kzero.analysis.stats import confidence_interval, format_interval, interval_of
from kzero.experiments import flagfile_setting, paper_experiments
from kzero.io import read_json
from kzero.records import DamagedFile, read_rows

__all__ = ["ANSWER_HEADER", "FAMILY", "METHODS", "answer_rows", "family_rows", "family_section"]

# The experiments the section reads, and the test accuracy whose first epoch
# (and seconds of training) it reports for each: 0.97 is Figure 3's FNN near
# its plateau; 0.65 for the CIFAR CNN is below what both its reference init
# (0.80) and zero_normal (0.69) ended at after 20 epochs in the runs of
# docs/results/earlier.md; 0.70 for the ResNet-20 is below what its reference
# init reaches in every seed within the epochs of flags/cifar_resnet20.flags,
# and high enough that the epochs and seconds to it tell the starts apart.
FAMILY = {"family_mnist_fnn": 0.97, "family_cifar_cnn": 0.65, "cifar_resnet20": 0.70}

# (model, scheme) -> the method's name; a scheme alone names it on any model.
METHODS = {
    "lecun": "PyTorch's default (the paper's reference)",
    "keras_default": "Glorot (Keras' default)",
    "he": "He",
    "zero_normal": "zero weights + N(0, 1) biases (the paper)",
    "zero_normal_bn": "the paper's, biases moved into the batch norms (kzero)",
    "zero_gamma": "zero-gamma (Goyal et al.)",
    "zero_hadamard": "ZerO (Zhao et al.)",
    ("resnet20_fixup", "lecun"): "Fixup (Zhang et al.)",
    ("resnet20_skipinit", "lecun"): "SkipInit / ReZero (De & Smith; Bachlechner et al.)",
    ("resnet50_fixup", "lecun"): "Fixup (Zhang et al.)",
    ("resnet50_skipinit", "lecun"): "SkipInit / ReZero (De & Smith; Bachlechner et al.)",
}


def _method(config):
    name = (METHODS.get((config.model, config.scheme)) or METHODS.get(config.scheme)
            or config.scheme)
    return name if config.init_scope == "all" else f"{name}, {config.init_scope} scope"


def _at_epoch(run, epoch):
    return run.accuracy[epoch - 1] if len(run.accuracy) >= epoch else None


def _interval_at(runs, epoch):
    values = [a for a in (_at_epoch(run, epoch) for run in runs) if a is not None]
    return interval_of(values) if len(values) == len(runs) else "-"


def _to_target(run, target):
    """(epochs, seconds of training) until the test accuracy first reached
    `target`, or None where it never did."""
    seconds = 0.0
    for epoch, row in enumerate(run.rows, start=1):
        seconds += float(row["seconds"])
        if row["test_accuracy"] >= target:
            return epoch, seconds
    return None


def _last_awake(run):
    """The step by which every kernel had a gradient, or None where one never did."""
    steps = list(((run.summary or {}).get("awakening_step") or {}).values())
    return max(steps) if steps and None not in steps else None


def _symmetry_at(run, start):
    """(units that are copies of another, dead units, units) summed over the
    layers of symmetry.csv, before training (`start`: its epoch 0 rows) or
    after the run's last recorded epoch; None where the run did not record
    that epoch (a run extended with symmetry on starts its file later) or
    the file cannot be read."""
    try:
        rows = read_rows(os.path.join(run.workdir, "symmetry.csv"))
    except DamagedFile:
        return None
    if not rows:
        return None
    epoch = 0 if start else max(row["epoch"] for row in rows)
    chosen = [row for row in rows if row["epoch"] == epoch]
    if not chosen:
        return None
    return (sum(row["units"] - row["distinct_units"] for row in chosen),
            sum(round(row["dead_fraction"] * row["units"]) for row in chosen),
            sum(row["units"] for row in chosen))


def _recomputed(run):
    """The final test accuracy with the batch norms' statistics recomputed
    from training images (`scripts/bn_statistics.py`'s bn_statistics.json),
    or None where the run has no such file for its last epoch."""
    try:
        measured = read_json(os.path.join(run.workdir, "bn_statistics.json"))
        if measured["epoch"] == len(run.accuracy):
            return float(measured["recomputed_statistics"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _flagfiles_of(experiment):
    """The flagfiles that write runs into `experiment`."""
    return [f"flags/{name}.flags" for name in paper_experiments()
            if flagfile_setting(name, "experiment") == experiment]


def family_rows(runs_by_key):
    """{(experiment, variant): measured} for the finished, undiverged runs of
    the `FAMILY` experiments."""
    rows = {}
    for (experiment, variant), runs in runs_by_key.items():
        if experiment not in FAMILY:
            continue
        runs = [run for run in runs if run.finished and run.diverged_epoch is None]
        if not runs:
            continue
        target = FAMILY[experiment]
        reached = [r for r in (_to_target(run, target) for run in runs) if r is not None]
        awake = [_last_awake(run) for run in runs]
        warned = [bool(((run.summary or {}).get("init_check") or {}).get(
            "erased_symmetry_breaking")) for run in runs]
        finals = [run.accuracy[-1] for run in runs]
        rows[(experiment, variant)] = {
            "model": runs[0].config.model, "method": _method(runs[0].config),
            "epochs": runs[0].config.epochs, "planned_epochs": planned_epochs(runs),
            "seeds": len(runs), "final": finals,
            "curves": [run.accuracy for run in runs],
            "epoch1": _interval_at(runs, 1), "epoch3": _interval_at(runs, 3),
            "target": target, "reached": reached, "awake": awake, "warned": warned,
            "symmetry_start": [_symmetry_at(run, start=True) for run in runs],
            "symmetry": [_symmetry_at(run, start=False) for run in runs],
            "recomputed": [_recomputed(run) for run in runs],
        }
    return rows


def _cell_to_target(measured):
    reached, seeds = measured["reached"], measured["seeds"]
    if not reached:
        return "not reached", "-"
    epochs = sum(e for e, _ in reached) / len(reached)
    seconds = sum(s for _, s in reached) / len(reached)
    note = "" if len(reached) == seeds else f" ({len(reached)} of {seeds} seeds)"
    return f"{epochs:.1f}{note}", f"{seconds:.0f}"


def _cell_awake(measured):
    awake = measured["awake"]
    if all(step is None for step in awake):
        return "-"
    known = [step for step in awake if step is not None]
    never = len(awake) - len(known)
    woke = f"step {max(known)}" if known else ""
    if never:
        woke += ("; " if woke else "") + f"{never} of {len(awake)} seeds had a kernel never woken"
    return woke


def _cell_symmetry(per_seed):
    recorded = [counts for counts in per_seed if counts is not None]
    if not recorded:
        return "not recorded"
    copies, dead = (sum(counts[i] for counts in recorded) / len(recorded) for i in (0, 1))
    note = "" if len(recorded) == len(per_seed) else f" ({len(recorded)} of {len(per_seed)} seeds)"
    return f"{round(copies, 1):g} / {round(dead, 1):g} of {recorded[0][2]}{note}"


def _cell_recomputed(per_seed):
    measured = [accuracy for accuracy in per_seed if accuracy is not None]
    if not measured:
        return "-"
    note = "" if len(measured) == len(per_seed) else f" ({len(measured)} of {len(per_seed)} seeds)"
    return interval_of(measured) + note


def _row(experiment, variant, measured):
    epochs, seconds = _cell_to_target(measured)
    warned = sum(measured["warned"])
    trained = measured["epochs"]
    if trained < measured["planned_epochs"]:
        trained = f"{trained} of {measured['planned_epochs']}"
    return (f"| {measured['model']} | {measured['method']} | `{variant}` | {measured['seeds']} | "
            f"{trained} | {interval_of(measured['final'])} | {measured['epoch1']} | "
            f"{measured['epoch3']} | {measured['target']:g}: {epochs} | {seconds} | "
            f"{_cell_awake(measured)} | {_cell_symmetry(measured['symmetry_start'])} | "
            f"{_cell_symmetry(measured['symmetry'])} | "
            f"{'yes' if warned else 'no'} | {_cell_recomputed(measured['recomputed'])} |")


def _within_noise(a, b):
    """Whether two (mean, half-width) intervals differ by less than their
    half-widths in quadrature (the report's rule for a difference)."""
    halves = [h if math.isfinite(h) else 0.0 for h in (a[1], b[1])]
    return abs(a[0] - b[0]) < math.hypot(*halves)


def _models_in_study_order(rows):
    """The models of `rows` (a residual variant under its base name), in the
    order of their first experiment in `FAMILY`."""
    first_experiment = {}
    for (experiment, _), measured in rows.items():
        model = measured["model"].split("_")[0]
        first_experiment[model] = min(first_experiment.get(model, len(FAMILY)),
                                      list(FAMILY).index(experiment))
    return sorted(first_experiment, key=first_experiment.get)


def _difference(a, b):
    """a - b for two (mean, half-width) intervals: the difference, the
    half-widths in quadrature, and whether it is beyond seed noise."""
    half = math.hypot(*(h if math.isfinite(h) else 0.0 for h in (a[1], b[1])))
    return (f"{a[0] - b[0]:+.4f} ± {half:.4f}, "
            + ("within seed noise" if _within_noise(a, b) else "beyond seed noise"))


REFERENCE_INITS = (METHODS["lecun"], METHODS["keras_default"], METHODS["he"])


def answer_rows(rows):
    """Per model, at the last epoch every start of the model has (the final
    one where they trained alike): the epochs compared, the highest mean and
    the starts within seed noise of it, and against the reference (lecun)
    the best start whose weights are (mostly) zero and the paper's scheme
    (all layers), the latter also with the batch norms' statistics
    recomputed where every seed of both has them for that epoch. A list of
    table cells per model."""
    table = []
    for model in _models_in_study_order(rows):
        mine = {k: m for k, m in rows.items() if m["model"].split("_")[0] == model}
        epoch = min(m["epochs"] for m in mine.values())
        means = {k: confidence_interval([curve[epoch - 1] for curve in m["curves"]])
                 for k, m in mine.items()}
        planned = max(m["planned_epochs"] for m in mine.values())
        if any(m["epochs"] != epoch for m in mine.values()):
            epochs = f"{epoch} (the last every start has)"
        else:
            epochs = str(epoch) if epoch >= planned else f"{epoch} of {planned}"
        best = max(means, key=lambda k: means[k][0])
        close = [mine[k]["method"] for k in sorted(means, key=lambda k: -means[k][0])
                 if k != best and _within_noise(means[k], means[best])]
        reference = next((k for k in mine if mine[k]["method"] == METHODS["lecun"]), None)
        zero = [k for k in means if mine[k]["method"] not in REFERENCE_INITS]
        paper = next((k for k in mine if mine[k]["method"] == METHODS["zero_normal"]), None)
        against = ["-", "-"]
        if reference is not None and zero:
            top = max(zero, key=lambda k: means[k][0])
            against[0] = f"{mine[top]['method']}: {_difference(means[top], means[reference])}"
        recomputed = "-"
        if reference is not None and paper is not None:
            against[1] = _difference(means[paper], means[reference])
            measured = [mine[k]["recomputed"] for k in (paper, reference)]
            if (all(mine[k]["epochs"] == epoch for k in (paper, reference))
                    and None not in measured[0] + measured[1]):
                recomputed = _difference(*map(confidence_interval, measured))
        table.append([model, epochs, f"{mine[best]['method']}, {format_interval(*means[best])}",
                      ", ".join(close) or "none", *against, recomputed])
    return table


ANSWER_HEADER = ("| model | epochs compared | highest mean test accuracy | within seed noise of it "
                 "| best zero-weight start, minus the reference | the paper's scheme, minus "
                 "the reference | the same, batch norm statistics recomputed |")


def _plot(rows, path):
    models = _models_in_study_order(rows)
    with figure(path, "The zero-init family: final test accuracy (95% interval over seeds)",
                panels=len(models)) as axes:
        for axis, model in zip(axes, models):
            mine = sorted(((k, m) for k, m in rows.items()
                           if m["model"].split("_")[0] == model),
                          key=lambda item: confidence_interval(item[1]["final"])[0])
            means = [confidence_interval(m["final"]) for _, m in mine]
            axis.barh(range(len(mine)), [mean for mean, _ in means],
                      xerr=[half if half == half else 0 for _, half in means], color="tab:blue")
            axis.set_yticks(range(len(mine)), [k[1] for k, _ in mine], fontsize=7)
            low = min(mean for mean, _ in means)
            # The bars are final accuracies: say where they are not all of one epoch
            # or stop short of the flagfile's plan.
            low_epochs, high_epochs = (f(m["epochs"] for _, m in mine) for f in (min, max))
            planned = max(m["planned_epochs"] for _, m in mine)
            title = model
            if low_epochs != high_epochs:
                title += f": {low_epochs} to {high_epochs} epochs"
            elif high_epochs < planned:
                title += f": {high_epochs} of {planned} epochs"
            high = max(mean + (half if half == half else 0) for mean, half in means)
            axis.set(xlabel="final test accuracy", title=title,
                     xlim=(max(0.0, low - 0.1), min(1.0, high + 0.02)))


def _and(items):
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def family_section(runs_by_key, out):
    """The section's markdown lines, its figure drawn into `out`; [] without
    runs of the `FAMILY` experiments."""
    rows = family_rows(runs_by_key)
    if not rows:
        return []
    _plot(rows, os.path.join(out, "family.png"))
    found = {experiment for experiment, _ in rows}
    lines = ["## The zero-init family side by side", "",
             "Each way to start from (mostly) zero weights beside the reference inits, under "
             "the paper's protocol (Adam 1e-3, batch 128, ELU), from the runs of "
             + _and([flagfile for experiment in FAMILY if experiment in found
                     for flagfile in _flagfiles_of(experiment)]) + ". "
             "Columns: the epochs trained (of those the flagfile plans, where fewer); "
             "the final test accuracy and those after "
             "epochs 1 and 3 (95% intervals over seeds; - where the runs are shorter); the "
             "epochs (mean over the seeds that got there) and seconds of training until the "
             "test accuracy first reached the target (the runs' metrics.csv, on the machine "
             "that ran them, with whatever else it ran then); the "
             "step by which every kernel had had a non-zero gradient (the last recorded "
             "awakening); the units that are copies of another unit of their layer (same "
             "incoming weights and bias) and the dead ones (output constant over the "
             "probe batch) before training and after the last epoch, summed over the layers "
             "and averaged over the seeds (symmetry.csv; not recorded where the runs were "
             "made with --norecord_symmetry, or recorded it only from a later epoch, or the "
             "file was not kept; `python scripts/symmetry_at_start.py RUN_DIR` adds a run's "
             "epoch 0 rows from its config); whether kzero's init check "
             "warned that batch norms remove the random biases; the final test accuracy with "
             "the batch norms' moving statistics replaced by those of training images under "
             "the final weights (`python scripts/bn_statistics.py RUN_DIR`, which writes the "
             "run's bn_statistics.json with the number of images; - where no run has one for "
             "its last epoch).", "",
             "![family](family.png)", "",
             "| model | method | variant | seeds | epochs | final | epoch 1 | epoch 3 | epochs "
             "to target | seconds to target | all kernels awake by | units alike / dead at the "
             "start | units alike / dead at the end | init check warns | final, batch norm "
             "statistics recomputed |",
             "| --- " * 15 + "|"]
    order = {experiment: i for i, experiment in enumerate(FAMILY)}
    lines += [_row(experiment, variant, measured) for (experiment, variant), measured in
              sorted(rows.items(), key=lambda item: (order[item[0][0]],
                                                     -confidence_interval(item[1]["final"])[0]))]
    lines += ["", "Which start trains best, per model, at the last epoch all its starts have "
              "(95% intervals over seeds; a difference's half-width is the two half-widths in "
              "quadrature; the zero-weight starts are all but lecun, Glorot and He; the paper's "
              "scheme is zero_normal in all layers; batch norm statistics recomputed as in "
              "the last column above, - where a seed has none):", "", ANSWER_HEADER,
              "| --- " * 7 + "|",
              *("| " + " | ".join(cells) + " |" for cells in answer_rows(rows)), ""]
    missing = [e for e in FAMILY if e not in found]
    if missing:
        lines += ["No runs here yet of " + ", ".join(
            f"`{e}` (`python -m kzero.run --flagfile=flags/{e}.flags`)" for e in missing)
            + ".", ""]
    return lines
