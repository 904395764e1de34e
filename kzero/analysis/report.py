"""Aggregates runs into the paper's figures and a table against its numbers.

    python -m kzero.report runs [more run dirs ...] [--out=DIR]

Reads every `<experiment>/<variant>/seed_<k>/` below the given directories
(shards of one grid merge naturally), and writes to `--out` (default: `report/`
inside the first directory, apart from the experiments' run directories):
  results.csv   mean test accuracy per experiment, variant and epoch, with a
                95% Student-t confidence interval over seeds;
  report.md     the final epoch of each variant next to the paper's value;
  <experiment>.png  test accuracy vs epoch (the paper's Figures 3-11);
  figure12.png  weight-gradient box plots over the first update steps;
  beyond_*.png  the figures of the studies beyond the paper (`kzero.analysis.beyond`).
Partial runs (fewer epochs or seeds than planned) and diverged runs are kept
apart and said so in the table and the figures.
"""

import glob
import math
import os
import sys


from kzero.analysis.paper import FIGURES, PAPER, READING_PRECISION
from kzero.analysis.stats import confidence_interval, format_interval
from kzero.config import Grid, RunConfig
from kzero.experiments import flagfile_setting
from kzero.io import read_json, write_atomic, write_csv
from kzero.protocols import PROTOCOLS
from kzero.records import DamagedFile, check_run_files, diverged_epoch, read_rows

__all__ = ["FIGURES", "PAPER", "aggregate", "collect", "confidence_interval", "main", "report"]

# What the report links to where it is in the output directory: measurements
# whose runs were not kept (docs/results/earlier.md).
EARLIER = "earlier.md"


def baseline_experiment(dataset):
    """The experiment whose logistic regression is drawn into a dataset's
    figures, as in the paper (its `DatasetSpec.baseline`), or None."""
    from kzero.datasets import get_dataset

    try:
        return get_dataset(dataset).baseline
    except ValueError:  # a dataset this process does not know
        return None

class Run:
    """One run directory as the report reads it: its `RunConfig` (names
    registered by other programs let through), summary and metrics."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.config = RunConfig.read(os.path.join(workdir, "config.json"), check_names=False)
        self.provenance = self.config.provenance
        summary_path = os.path.join(workdir, "summary.json")
        self.summary = read_json(summary_path) if os.path.exists(summary_path) else None
        self.rows = [{**row, **{k: float(row[k]) for k in ("loss", "test_loss", "test_accuracy")}}
                     for row in read_rows(os.path.join(workdir, "metrics.csv"))]
        self.accuracy = [row["test_accuracy"] for row in self.rows]
        self.diverged_epoch = diverged_epoch(self.rows)

    @property
    def replayed_first_epoch_order(self):
        """Trained by kzero 0.1 through its NumPy pipeline, which gave every
        epoch the first epoch's order. 0.1 did not record which pipeline ran:
        `auto` chose NumPy where TensorFlow was missing, which for 0.1's runs
        meant the GPU machines (accelerator other than "cpu")."""
        if "kzero" in (self.config.provenance.versions or {}):
            return False
        return self.config.pipeline == "numpy" or (
            self.config.provenance.accelerator or "cpu") != "cpu"

    @property
    def finished(self):
        return self.summary is not None and len(self.accuracy) == self.config.epochs


def collect(directories, left_out=None):
    """{(experiment, variant): [Run, ...]} for every run below `directories`.
    A run whose files cannot be read is left out: `(workdir, reason)` is added
    to `left_out` where it is a list, and else raised."""
    groups = {}
    for directory in directories:
        for config in sorted(glob.glob(os.path.join(directory, "*", "*", "seed_*",
                                                    "config.json"))):
            workdir = os.path.dirname(config)
            variant_dir = os.path.dirname(workdir)
            key = (os.path.basename(os.path.dirname(variant_dir)), os.path.basename(variant_dir))
            try:
                check_run_files(workdir)
                run = Run(workdir)
            except (DamagedFile, ValueError) as e:  # ConfigError and JSON's errors too
                if left_out is None:
                    raise
                left_out.append((workdir, str(e).splitlines()[0][:300]))
                continue
            groups.setdefault(key, []).append(run)
    return groups


def aggregate(runs):
    """Per epoch: mean and CI over the runs that have not diverged by then,
    plus what is missing or diverged."""
    planned = planned_epochs(runs)
    healthy = [run for run in runs if run.diverged_epoch is None]
    rows = []
    for epoch in range(1, planned + 1):
        values = [run.accuracy[epoch - 1] for run in healthy if len(run.accuracy) >= epoch]
        if not values:
            break
        mean, half = confidence_interval(values)
        rows.append({"epoch": epoch, "n": len(values), "mean": mean,
                     "ci_low": mean - half, "ci_high": mean + half})
    seeds = {run.config.seed for run in runs}
    planned_runs = runs[0].config.provenance.runs or len(seeds)
    base_seed = runs[0].config.provenance.base_seed
    base_seed = min(seeds) if base_seed is None else base_seed
    expected = set(range(base_seed, base_seed + planned_runs))
    return {
        "rows": rows,
        "planned_epochs": planned,
        "planned_runs": planned_runs,
        "missing_seeds": sorted(expected - seeds),
        "diverged": {run.config.seed: run.diverged_epoch for run in runs
                     if run.diverged_epoch is not None},
        "unfinished": sorted(run.config.seed for run in runs
                             if not run.finished and run.diverged_epoch is None),
        "dataset": runs[0].config.dataset,
        "setups": sorted({(run.provenance.backend, _device(run.provenance),
                           run.provenance.host or "?", run.provenance.command or "?")
                          for run in runs}, key=lambda setup: tuple(map(str, setup))),
        "wall_seconds": _wall_seconds(runs),
        "timed_runs": sum(1 for run in runs if (run.summary or {}).get("wall_seconds")),
        "replayed_order": sorted(run.config.seed for run in runs
                                 if run.replayed_first_epoch_order),
        "base_variant": _base_variant(runs[0]),
        "protocol": runs[0].config.protocol_label,
        "expected_epochs": _expected_epochs(runs[0]),
        "backend_init": sorted(run.config.seed for run in runs
                               if not run.provenance.init_stream),
        "at_chance": sorted(run.config.seed for run in runs if run.diverged_epoch is None
                            and _at_chance(run)),
    }


def _at_chance(run):
    """Whether a run ended no better than guessing: its final test accuracy
    within 0.02 of 1 / the number of classes (where the dataset is known)."""
    from kzero.datasets import get_dataset

    try:
        classes = get_dataset(run.config.dataset).num_classes
    except ValueError:
        return False
    return bool(run.accuracy) and run.accuracy[-1] < 1.0 / classes + 0.02


def _base_variant(run):
    """The run's variant less its protocol: its directory's name, which the
    report goes by, without `RunConfig.protocol_suffix`."""
    variant = os.path.basename(os.path.dirname(run.workdir))
    suffix = run.config.protocol_suffix
    return variant[:-len(suffix)] if suffix and variant.endswith(suffix) else variant


def _experiment(run):
    return os.path.basename(os.path.dirname(os.path.dirname(run.workdir)))


def _imposed_epochs(run):
    """The epochs the run's protocol imposes on its model (the paper code's
    logistic baselines), or None."""
    if run.config.protocol not in PROTOCOLS:
        return None
    return PROTOCOLS.get(run.config.protocol).epochs.get((run.config.dataset, run.config.model))


def _expected_epochs(run):
    """The epochs a run must train to be compared with the paper's figure:
    those its protocol imposes, else the figure's."""
    figure = FIGURES.get(_experiment(run))
    return _imposed_epochs(run) or (figure[2] if figure else None)


def _device(provenance):
    """What a run computed on: the accelerator, or the CPU with its model name
    where the run recorded one, since the same seed rounds differently on
    another CPU model."""
    device = provenance.accelerator or "?"
    if device == "cpu" and provenance.processor:
        device = f"cpu ({provenance.processor})"
    return device


def planned_epochs(runs):
    """The epochs planned for one variant's runs: the most any of them was
    given, or what the experiment's flagfile plans (or the protocol imposes)
    where that is more. Runs cut short on the command line (`--epochs=3` of a
    20-epoch flagfile) are partial against that plan, not complete against
    their own."""
    flagfile = _imposed_epochs(runs[0]) or int(
        flagfile_setting(_experiment(runs[0]), "epochs") or 0)
    return max([run.config.epochs for run in runs] + [flagfile])


def never_started(runs_by_key):
    """{experiment: [(variant, seeds), ...]}: the variants that the grids of an
    experiment's runs planned (each run's config.json holds its grid's axes)
    and that have no run directory, with the seeds planned for each."""
    planned, found = {}, set(runs_by_key)
    for (experiment, _), runs in runs_by_key.items():
        for run in runs:
            try:
                grid = Grid.of_run(run.config, check_names=False).expand()
            except ValueError:  # a model or scheme that this process does not know
                grid = []
            for config in grid:
                planned.setdefault((experiment, config.variant), set()).add(config.seed)
    missing = {}
    for (experiment, variant), seeds in sorted(planned.items()):
        if (experiment, variant) not in found:
            missing.setdefault(experiment, []).append((variant, len(seeds)))
    return missing


def _wall_seconds(runs):
    """The runs' summed wall time, each `--parallel_runs` group once: its runs
    trained together and each summary holds the group's time, so each run
    counts its share of it, and a group spanning variants is counted once
    over them. A summary's time is that of the process that finished the
    run; where that process resumed or extended it, the epochs before count
    their seconds in metrics.csv (training and evaluation, not start-up)."""
    total = 0.0
    for run in runs:
        share = len(run.provenance.parallel_group or ()) or 1
        summary = run.summary or {}
        earlier = run.rows[:summary.get("resumed_from_epoch") or 0]
        total += ((summary.get("wall_seconds") or 0)
                  + sum(float(row.get("seconds") or 0) for row in earlier)) / share
    return total


def _caveats(stats):
    notes = []
    if stats["missing_seeds"]:
        notes.append(f"missing seeds {stats['missing_seeds']}")
    for seed, epoch in sorted(stats["diverged"].items()):
        notes.append(f"seed {seed} diverged at epoch {epoch}")
    if stats["unfinished"]:
        notes.append(f"seeds {stats['unfinished']} unfinished")
    # A variant compared with a figure says its shortfall as "not comparable".
    if (stats["expected_epochs"] is None and stats["rows"]
            and stats["rows"][-1]["epoch"] < stats["planned_epochs"]):
        notes.append(f"only {stats['rows'][-1]['epoch']} of {stats['planned_epochs']} epochs")
    if stats.get("replayed_order"):
        notes.append(f"seeds {stats['replayed_order']} saw the first epoch's example order in "
                     "every epoch (kzero 0.1 NumPy pipeline), not a reshuffle per epoch")
    if stats.get("at_chance"):
        notes.append(f"seeds {stats['at_chance']} ended at chance level (final test accuracy "
                     "within 0.02 of 1 / classes)")
    if stats.get("backend_init"):
        notes.append(f"seeds {stats['backend_init']} drew their initial weights from the "
                     "backend's own generator (kzero before 0.4)")
    return notes


def write_results(stats_by_key, path):
    rows = [{"experiment": experiment, "variant": variant, **row,
             "planned_runs": stats["planned_runs"], "diverged_runs": len(stats["diverged"])}
            for (experiment, variant), stats in sorted(stats_by_key.items())
            for row in stats["rows"]]
    write_csv(path, ["experiment", "variant", "epoch", "n", "mean", "ci_low", "ci_high",
                     "planned_runs", "diverged_runs"], rows)


def plot_experiment(experiment, stats_by_key, path):
    """Test accuracy against epoch for each variant of `experiment`, its
    confidence band, and the dataset's logistic baseline dashed. Returns what
    was drawn: {label: {"epochs", "mean", "ci_low", "ci_high", "dashed"}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = {v: s for (e, v), s in stats_by_key.items() if e == experiment}
    dataset = next(iter(variants.values()))["dataset"]
    baseline = baseline_experiment(dataset)
    if baseline and baseline != experiment:
        last_epoch = max(s["planned_epochs"] for s in variants.values())
        variants.update({f"baseline: {v}": {**s, "rows": s["rows"][:last_epoch],
                                            "planned_epochs": min(s["planned_epochs"], last_epoch)}
                         for (e, v), s in stats_by_key.items() if e == baseline})
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    partial, drawn = False, {}
    for variant, stats in sorted(variants.items()):
        if not stats["rows"]:
            continue
        epochs = [r["epoch"] for r in stats["rows"]]
        label = f"{variant} (n={stats['rows'][-1]['n']})"
        if _caveats(stats):
            partial = True
            label += " *"
        style = "--" if variant.startswith("baseline") else "-"
        line, = ax.plot(epochs, [r["mean"] for r in stats["rows"]], style, marker="o",
                        markersize=3, label=label)
        ax.fill_between(epochs, [r["ci_low"] for r in stats["rows"]],
                        [r["ci_high"] for r in stats["rows"]], color=line.get_color(), alpha=0.2)
        drawn[label] = {"epochs": list(line.get_xdata()), "mean": list(line.get_ydata()),
                        "ci_low": [r["ci_low"] for r in stats["rows"]],
                        "ci_high": [r["ci_high"] for r in stats["rows"]],
                        "dashed": line.get_linestyle() == "--"}
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(experiment + (" (partial: see * in report.md)" if partial else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return drawn


def plot_figure12(runs_by_key, path, steps=5):
    """The paper's Figure 12, made to show the awakening: for each layer (a
    row) and init (a column, reference beside zero_normal), box plots of its
    kernel gradient at update steps 1..steps, from the first seed of the CIFAR
    FNN experiment (drawn from the recorded quartiles, min and max). Every
    panel has its own scale, since a layer's gradients are orders of magnitude
    apart from the logits'; steps at which a layer's kernel gradient was
    exactly zero are shaded, and its awakening step is marked.

    Returns what was drawn, {"boxes": {(variant, step): {layer: (min, q25,
    median, q75, max)}}, "awakening": {variant: {layer: step or None}}}, or
    None where no such runs exist."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for variant in ("fnn_lecun", "fnn_zero_normal_x1"):
        runs = sorted(runs_by_key.get(("cifar_fnn", variant), []),
                      key=lambda run: run.config.seed)
        path_csv = runs and os.path.join(runs[0].workdir, "gradients.csv")
        if path_csv and os.path.exists(path_csv):
            panels.append((variant, [r for r in read_rows(path_csv)
                                     if r["param"] == "kernel" and r["step"] <= steps]))
    if not panels:
        return None
    layers = list(dict.fromkeys(r["layer"] for _, rows in panels for r in rows))
    fig, axes = plt.subplots(len(layers), len(panels), figsize=(4.5 * len(panels),
                             2.2 * len(layers)), dpi=100, squeeze=False)
    drawn = {"boxes": {}, "awakening": {}}
    for column, (variant, rows) in enumerate(panels):
        awake = drawn["awakening"][variant] = {}
        for row, layer in enumerate(layers):
            ax = axes[row][column]
            own = sorted((r for r in rows if r["layer"] == layer), key=lambda r: r["step"])
            boxes = [{"label": str(r["step"]), "whislo": r["min"], "q1": r["q25"],
                      "med": r["median"], "q3": r["q75"], "whishi": r["max"], "fliers": []}
                     for r in own]
            for r, box in zip(own, boxes):
                drawn["boxes"].setdefault((variant, r["step"]), {})[layer] = tuple(
                    box[k] for k in ("whislo", "q1", "med", "q3", "whishi"))
            awake[layer] = next((r["step"] for r in own if r["zero_fraction"] < 1.0), None)
            if boxes:
                ax.bxp(boxes, positions=[r["step"] for r in own], showfliers=False)
            asleep_until = awake[layer] or steps + 1
            if asleep_until > 1:  # steps with a kernel gradient of exactly zero
                ax.axvspan(0.5, asleep_until - 0.5, color="0.85", zorder=0)
            if awake[layer] is not None:
                ax.axvline(awake[layer], color="tab:red", linestyle="--", linewidth=1)
            woke = f"wakes at step {awake[layer]}" if awake[layer] else "never wakes"
            ax.set_title(f"{variant}: {layer}, {woke}", fontsize=8)
            ax.set_xlim(0.5, steps + 0.5)
            ax.tick_params(labelsize=6)
            if row == len(layers) - 1:
                ax.set_xlabel("update step", fontsize=7)
    fig.suptitle("Kernel gradients over the first update steps (CIFAR-10 FNN): grey, the "
                 "steps at which a layer's kernel gradient is exactly 0", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return drawn


def _final(stats):
    """(mean, half-width, epoch, seeds) at the last aggregated epoch, or None."""
    if not stats["rows"]:
        return None
    last = stats["rows"][-1]
    return last["mean"], (last["ci_high"] - last["ci_low"]) / 2, last["epoch"], last["n"]


def _comparable(stats):
    """Whether the variant trained the epochs of the paper's figure: None if
    it did, else why not, e.g. "not comparable: 2 of 15 epochs"."""
    final, expected = _final(stats), stats["expected_epochs"]
    if final is None:
        return ("not comparable: no epoch without divergence" if stats["diverged"]
                else "not comparable: no run has finished an epoch")
    if expected is not None and final[2] < expected:
        return f"not comparable: {final[2]} of {expected} epochs"
    return None


def _row(experiment, stats):
    paper = PAPER.get((experiment, stats["base_variant"]))
    final = _final(stats)
    notes = _caveats(stats)
    ours, epochs, seeds = ("all diverged" if stats["diverged"] else "no epoch yet"), 0, 0
    diff = inside = "-"
    if final is not None:
        mean, half, epochs, seeds = final
        ours = format_interval(mean, half)
    why_not = _comparable(stats)
    if why_not:
        notes.insert(0, why_not)
    elif paper is not None:
        diff = f"{mean - paper:+.4f}"
        inside = "yes" if _holds((mean, half), paper) else "no"
        if inside == "no":
            notes.append("within reading precision of the paper's figure"
                         if abs(mean - paper) <= READING_PRECISION
                         else "differs beyond reading precision of the paper's figure")
    paper_text = "-" if paper is None else f"{paper:.4g}"
    return (f"| {stats['base_variant']} | {stats['protocol']} | {epochs}/"
            f"{stats['planned_epochs']} | {seeds}/{stats['planned_runs']} | {ours} | "
            f"{paper_text} | {diff} | {inside} | {'; '.join(notes)} |")


def _difference(a, b):
    """a - b for two (mean, half-width) pairs, the half-widths in quadrature
    (independent seeds on both sides)."""
    return a[0] - b[0], math.hypot(a[1], b[1])


def _holds(final, paper):
    """Whether the paper's value lies in a (mean, half-width) interval (1e-6:
    accuracies are float32, so an exact match can be off by that)."""
    mean, half = final
    return math.isfinite(half) and abs(mean - paper) <= half + 1e-6


def _attribution(base, paper, text, finals, protocols):
    """Which protocols account for a paper_text row's difference to the
    paper: those that bring the paper's value inside their interval by a
    move beyond seed noise."""
    inside = [p for p in protocols[1:] if (base, p) in finals and _holds(finals[(base, p)], paper)]
    beyond = [p for p in inside if abs(_difference(finals[(base, p)], text)[0])
              > _difference(finals[(base, p)], text)[1]]
    said = "the paper's value lies outside the paper_text interval; "
    if beyond:
        return (said + f"it lies inside the interval of {' and of '.join(beyond)}, moved "
                "beyond seed noise: " + " and ".join(beyond)
                + f" account{'s' if len(beyond) == 1 else ''} for the difference.")
    if inside:
        return (said + f"it lies inside the interval of {' and of '.join(inside)}, but "
                "within seed noise of paper_text: the difference is not attributed.")
    return said + "no protocol run here brings it inside: the difference stays unexplained."


def _measured(experiment, variants):
    """Sentences computed from the section's own comparable rows: the gap of
    each zero-weight scheme to the reference init, against the paper's, and
    what each protocol or protocol item moves, against paper_text, and whether
    that accounts for a difference to the paper."""
    # Rows with an interval only: one seed says nothing about seed noise.
    finals = {(s["base_variant"], s["protocol"]): _final(s)[:2]
              for s in variants.values()
              if _comparable(s) is None and math.isfinite(_final(s)[1])}
    lines = []
    protocols = sorted({p for _, p in finals}, key=lambda p: (p != "paper_text", p))
    # The reference init on the section's own model: where other models of
    # the same experiment (resnet20_fixup_lecun) also take lecun, the plainest name.
    reference = min((b for b, _ in finals if b.endswith("_lecun")),
                    key=lambda b: (b.count("_"), b), default=None)
    for protocol in protocols:
        if reference is None or (reference, protocol) not in finals:
            continue
        for base in sorted(b for b, p in finals if p == protocol and b != reference):
            gap, half = _difference(finals[(reference, protocol)], finals[(base, protocol)])
            paper = (PAPER.get((experiment, reference)), PAPER.get((experiment, base)))
            said = (f"; in the paper {paper[0] - paper[1]:+.4f}" if None not in paper else "")
            lines.append(f"- {protocol}: {reference} - {base} = {gap:+.4f} ± {half:.4f}{said}.")
    for base in sorted({b for b, _ in finals}):
        text = finals.get((base, "paper_text"))
        if text is None:
            continue
        paper = PAPER.get((experiment, base))
        moves = []
        for protocol in protocols[1:]:
            if (base, protocol) not in finals:
                continue
            other = finals[(base, protocol)]
            delta, half = _difference(other, text)
            verdict = ("within seed noise" if abs(delta) <= half
                       else "beyond seed noise")
            sentence = (f"{protocol} moves it by {delta:+.4f} ± {half:.4f} ({verdict}), "
                        f"to {other[0]:.4f}")
            if paper is not None:
                sentence += (f", its difference to the paper from {text[0] - paper:+.4f} to "
                             f"{other[0] - paper:+.4f}")
            moves.append(sentence)
        if moves:
            against = f" (paper {paper:.4g})" if paper is not None else ""
            lines.append(f"- {base}: {text[0]:.4f} under paper_text{against}; "
                         + "; ".join(moves) + ".")
        if moves and paper is not None and not _holds(text, paper):
            lines.append(f"- {base}: " + _attribution(base, paper, text, finals, protocols))
    if lines:
        lines = ["Measured from these rows (differences with their 95% half-widths, the two "
                 "intervals in quadrature):", "", *lines, ""]
    return lines


def beyond_the_paper(runs_by_key, out):
    """The "Beyond the paper" section: one subsection per study of
    `kzero.analysis.beyond.SECTIONS` that has runs, its figure drawn into `out`."""
    from kzero.analysis.beyond import SECTIONS

    lines = []
    for experiment, section in SECTIONS.items():
        # Finished or diverged runs only: a run in progress has no summary yet.
        runs = {v: [run for run in r if run.summary is not None]
                for (e, v), r in runs_by_key.items() if e == experiment}
        runs = {v: r for v, r in runs.items() if r}
        if runs:
            lines += section(runs, out)
    if not lines:
        return []
    return ["## Beyond the paper", "", "Questions the paper's discussion leaves open, each "
            "answered from the runs of its flagfile (`flags/<experiment>.flags`, 5 seeds); "
            "every number and sentence below is computed from those runs.", "", *lines]


def _own_section(experiment):
    """Whether an experiment has a section of its own (a study beyond the
    paper, or the first-steps census) instead of a table against the paper."""
    from kzero.analysis.beyond import SECTIONS
    from kzero.analysis.first_steps import CENSUS_PREFIX

    return experiment in SECTIONS or experiment.startswith(CENSUS_PREFIX)


def write_report(stats_by_key, figures, path, beyond=(), first_steps=(), left_out=(),
                 not_started=None, family=()):
    lines = ["# kzero reproduction report", "",
             "Final-epoch test accuracy: mean over seeds with a 95% Student-t confidence "
             "interval, next to the value read off the paper's figure (Schicho, 2023, the "
             "figure named in each section's title). `inside` says whether the paper's value "
             "lies in our interval. A variant is compared only when it trained the figure's "
             "epochs (or those its protocol imposes). Protocols: `paper_text` follows the "
             "paper's text, `paper_code` the authors' code where the text is silent "
             "(kzero.protocols). Diverged seeds are left out of the mean and listed.", ""]
    if left_out:
        lines += [(f"{len(left_out)} runs could not be read and are" if len(left_out) > 1
                   else "1 run could not be read and is") +
                  " left out of every table and figure below:", ""]
        lines += [f"- `{workdir}`: {reason}" for workdir, reason in left_out]
        lines.append("")
    order = list(FIGURES)
    experiments = sorted({e for e, _ in stats_by_key if not _own_section(e)},
                         key=lambda e: (order.index(e) if e in order else len(order), e))
    for experiment in experiments:
        variants = {v: s for (e, v), s in stats_by_key.items() if e == experiment}
        figure, subject, _ = FIGURES.get(experiment, (None, None, None))
        lines += [f"## {figure}: {subject} (`{experiment}`)" if figure else f"## {experiment}",
                  ""]
        if experiment in figures:
            lines += [f"![{experiment}]({figures[experiment]})", ""]
        lines += ["| variant | protocol | epochs | seeds | ours | paper | ours - paper | inside "
                  "| notes |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        ordered = sorted(variants.values(), key=lambda s: (
            s["base_variant"], s["protocol"] != "paper_text", s["protocol"]))
        lines += [_row(experiment, stats) for stats in ordered]
        lines.append("")
        if (not_started or {}).get(experiment):
            lines += ["Planned by this experiment's grid and never started (no run directory; "
                      "the command below trains them): " + ", ".join(
                          f"`{variant}` ({seeds} seed{'s' if seeds > 1 else ''})"
                          for variant, seeds in not_started[experiment]) + ".", ""]
        lines += _measured(experiment, variants)
        wall = sum(s["wall_seconds"] for s in variants.values())
        timed = sum(s["timed_runs"] for s in variants.values())
        setups = sorted({setup for s in variants.values() for setup in s["setups"]})
        lines += [(f"Summed wall time of its {timed} finished runs (a parallel group once): "
                   f"{wall / 60:.1f} min." if timed else
                   "No run has finished, so there is no wall time to sum.") + " Produced by:",
                  ""]
        lines += [f"- `{command}` (backend {backend}, on {device}, host {host})"
                  for backend, device, host, command in setups]
        lines.append("")
    missing = sorted({e for e, _ in PAPER} - {e for e, _ in stats_by_key})
    if missing:
        # Every experiment of the paper has a flagfile of its own name (tests/test_run.py).
        lines += ["## Not run here", "", "No runs were found for these experiments; each runs "
                  "with:", ""]
        lines += [f"- `{e}`: `python -m kzero.run --flagfile=flags/{e}.flags`" for e in missing]
        lines.append("")
        if os.path.exists(os.path.join(os.path.dirname(path), EARLIER)):
            lines += [f"Earlier measurements of some of them, whose runs were not kept: "
                      f"[{EARLIER}]({EARLIER}).", ""]
    lines += list(first_steps)
    lines += list(family)
    if "figure12" in figures:
        lines += ["## Figure 12", "", f"![figure 12]({figures['figure12']})", ""]
    lines += list(beyond)
    write_atomic(path, "\n".join(lines) + "\n")


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kzero.report",
                                     description="Aggregates runs into the paper's figures "
                                     "and a table against its numbers.")
    parser.add_argument("directories", nargs="+", help="runs directories (shards merge)")
    parser.add_argument("--out", help="where to write the report; default DIRECTORY/report "
                        "for the first directory given")
    args = parser.parse_args(argv)
    missing = [d for d in args.directories if not os.path.isdir(d)]
    if missing:
        print(f"kzero.report: error: no such directory: {missing[0]}", file=sys.stderr)
        sys.exit(2)
    report(args.directories, args.out or os.path.join(args.directories[0], "report"))


def report(directories, out):
    """Writes results.csv, report.md and the figures for the runs below
    `directories` into `out`; returns the per-variant statistics."""
    left_out = []
    runs_by_key = collect(directories, left_out)
    for workdir, reason in left_out:
        print(f"kzero.report: left out {workdir}: {reason}", file=sys.stderr)
    if not runs_by_key:
        raise SystemExit(f"kzero.report: error: no runs below {', '.join(directories)}")
    os.makedirs(out, exist_ok=True)
    stats_by_key = {key: aggregate(runs) for key, runs in runs_by_key.items()}
    write_results(stats_by_key, os.path.join(out, "results.csv"))
    from kzero.analysis.family import family_section
    from kzero.analysis.first_steps import first_steps_section

    figures = {}
    for experiment in sorted({e for e, _ in stats_by_key if not _own_section(e)}):
        plot_experiment(experiment, stats_by_key, os.path.join(out, f"{experiment}.png"))
        figures[experiment] = f"{experiment}.png"
    if plot_figure12(runs_by_key, os.path.join(out, "figure12.png")):
        figures["figure12"] = "figure12.png"
    not_started = never_started(runs_by_key)
    write_report(stats_by_key, figures, os.path.join(out, "report.md"),
                 beyond_the_paper(runs_by_key, out), first_steps_section(runs_by_key, out),
                 left_out, not_started, family_section(runs_by_key, out))
    for experiment, variants in not_started.items():
        print(f"kzero.report: {experiment}: {len(variants)} planned variant"
              f"{'s' if len(variants) > 1 else ''} never started: "
              f"{', '.join(variant for variant, _ in variants)}", file=sys.stderr)
    print(f"kzero.report: {len(stats_by_key)} variants -> {out}/report.md")
    return stats_by_key


if __name__ == "__main__":
    main()
