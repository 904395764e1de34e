"""Studies beyond the paper: the report sections that answer the questions its
discussion leaves open, each computed from the runs of one flagfile
(`flags/beyond_*.flags`), with its figure.

`SECTIONS` maps an experiment name to the function that writes its section:
`section(runs_by_variant, out)` returns the section's markdown lines, and
draws its figure into `out`. `kzero.analysis.report` calls them for the experiments it
finds, in place of the table against the paper that those have no row of.
"""

import math
import os

import numpy as np

from kzero.analysis.plots import figure
from kzero.analysis.stats import confidence_interval, interval_of, mean_of_finite, run_csv

__all__ = ["SECTIONS", "epochs_to", "gradient_norm", "largest_fall"]

# A seed whose test accuracy falls by more than this from one epoch to the
# next has trained unstably.
UNSTABLE_FALL = 0.01
# The accuracy whose epoch the depth study reports ("epochs to 90%").
TARGET_ACCURACY = 0.9


def _healthy(runs):
    return [run for run in runs if run.diverged_epoch is None and run.accuracy]


def largest_fall(accuracy):
    """The largest drop of test accuracy from one epoch to the next (0 if it
    never drops)."""
    return max([0.0] + [a - b for a, b in zip(accuracy, accuracy[1:])])


def epochs_to(accuracy, target=TARGET_ACCURACY):
    """The first epoch (from 1) whose test accuracy reaches `target`, or None."""
    return next((epoch for epoch, value in enumerate(accuracy, start=1) if value >= target), None)


def gradient_norm(rows, step):
    """The L2 norm of the whole gradient (every kernel and bias) at `step`,
    from `gradients.csv` rows: per variable, count * (std^2 + mean^2) is its
    sum of squares."""
    own = [r for r in rows if r["step"] == step]
    if not own:
        return math.nan
    return math.sqrt(sum(r["count"] * (r["std"] ** 2 + r["mean"] ** 2) for r in own))


def _bias_scale(runs_by_variant, out):
    """Question 1: why do large bias scales make training unstable?"""
    scales = sorted({run.config.bias_scale for runs in runs_by_variant.values() for run in runs})
    by_scale = {s: [r for runs in runs_by_variant.values() for r in runs
                    if r.config.bias_scale == s] for s in scales}
    table = ["| bias scale | seeds | final test accuracy | largest fall | unstable seeds | "
             "dense1 saturated at step 1 | max abs logit, step 1 | max abs logit, last recorded | "
             "gradient norm, step 1 | largest gradient norm |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    measured = {}
    for scale, runs in by_scale.items():
        healthy = _healthy(runs)
        falls = [largest_fall(run.accuracy) for run in healthy]
        unstable = sorted(run.config.seed for run in runs if run.diverged_epoch is not None
                          or largest_fall(run.accuracy) > UNSTABLE_FALL)
        first, last, saturated, norm1, norm_max = [], [], [], [], []
        for run in runs:
            rows = run_csv(run, "activations.csv")
            logits = sorted((r for r in rows if r["layer"] == "logits"), key=lambda r: r["step"])
            if logits:
                first.append(logits[0]["pre_max_abs"])
                last.append(logits[-1]["pre_max_abs"])
            saturated += [r["saturated_fraction"] for r in rows
                          if r["layer"] == "dense1" and r["step"] == 1]
            gradients = run_csv(run, "gradients.csv")
            if gradients:
                steps = sorted({r["step"] for r in gradients})
                norms = [gradient_norm(gradients, step) for step in steps]
                norm1.append(norms[0])
                norm_max.append(max(norms))
        measured[scale] = {"accuracy": [run.accuracy[-1] for run in healthy],
                           "unstable": unstable, "saturated": mean_of_finite(saturated),
                           "logit_first": mean_of_finite(first), "logit_last": mean_of_finite(last),
                           "norm1": mean_of_finite(norm1), "norm_max": mean_of_finite(norm_max),
                           "curves": [run.accuracy for run in healthy]}
        m = measured[scale]
        table.append(f"| {scale:g} | {len(runs)}/{runs[0].provenance.runs} | "
                     f"{interval_of(m['accuracy'])} | "
                     f"{mean_of_finite(falls):.4f} | {len(unstable)} of {len(runs)} | "
                     f"{m['saturated']:.3f} | {m['logit_first']:.3g} | {m['logit_last']:.3g} | "
                     f"{m['norm1']:.3g} | {m['norm_max']:.3g} |")
    lines = ["### Large bias scales (`beyond_bias_scale`)", "",
             "The paper guesses that large bias scales destabilise training by \"an over "
             "amplification of the input signals during the forward pass\". Per scale, over "
             "seeds: the final test accuracy (95% interval), the largest fall of test accuracy "
             "from one epoch to the next, the seeds that fell by more than "
             f"{UNSTABLE_FALL} or diverged (unstable), the fraction of the first layer's "
             "pre-activations below -5 (where ELU's gradient is under 0.007) at the first "
             "update step, the largest logit magnitude on the probe batch at the first and the "
             "last recorded step, and the norm of the whole gradient (activations.csv, "
             "gradients.csv).", ""]
    figure = _plot_bias_scale(measured, os.path.join(out, "beyond_bias_scale.png"))
    if figure:
        lines += [f"![beyond_bias_scale]({figure})", ""]
    lines += table + [""] + _bias_scale_answer(measured) + [""]
    return lines


def _bias_scale_answer(measured):
    scales = sorted(measured)
    unstable = [s for s in scales if measured[s]["unstable"]]
    stable = [s for s in scales if not measured[s]["unstable"]]
    grows = {key: all(measured[a][key] <= measured[b][key] for a, b in zip(scales, scales[1:]))
             for key in ("saturated", "logit_first", "logit_last", "norm1")}
    rising = [name for key, name in (("logit_first", "the logits at step 1"),
                                     ("logit_last", "the logits at the last recorded step"),
                                     ("saturated", "the saturated fraction"),
                                     ("norm1", "the first gradient norm")) if grows[key]]
    lines = ["Measured from these runs:", ""]
    lines.append(f"- Growing with the bias scale at every step of the sweep: "
                 f"{', '.join(rising) if rising else 'none of the recorded quantities'}.")
    if not unstable:
        lines.append("- No scale trained unstably by the measure above.")
        return lines
    onset = unstable[0]
    m = measured[onset]
    lines.append(f"- Training first turned unstable at bias scale {onset:g} "
                 f"({len(m['unstable'])} seeds), where the first layer had "
                 f"{m['saturated']:.1%} of its pre-activations saturated and the logits reached "
                 f"{m['logit_first']:.3g} at step 1; unstable scales: "
                 f"{', '.join(f'{s:g}' for s in unstable)}.")
    separated = bool(stable) and min(measured[s]["logit_last"] for s in unstable) > max(
        measured[s]["logit_last"] for s in stable)
    if separated:
        lines.append("- Every unstable scale had larger logits at the last recorded step than "
                     "every stable one: consistent with the paper's guess of an "
                     "over-amplified forward signal. The saturated fraction grows with the "
                     "scale too, so these runs do not separate amplification from saturation.")
    else:
        lines.append("- Unstable and stable scales overlap in logit magnitude at the last "
                     "recorded step: the forward amplification alone does not sort them, "
                     "against the paper's guess.")
    return lines


def _plot_bias_scale(measured, path):
    scales = sorted(measured)
    if not scales:
        return None
    title = "MNIST FNN, zero_normal: test accuracy and ELU saturation against bias scale"
    with figure(path, title) as (curves, finals):
        _draw_bias_scale(measured, scales, curves, finals)
    return os.path.basename(path)


def _draw_bias_scale(measured, scales, curves, finals):
    for scale in scales:
        runs = measured[scale]["curves"]
        if runs:
            length = min(len(r) for r in runs)
            curves.plot(range(1, length + 1), np.mean([r[:length] for r in runs], axis=0),
                        marker="o", markersize=3, label=f"x{scale:g}")
    curves.set_xlabel("epoch")
    curves.set_ylabel("test accuracy (mean over seeds)")
    curves.legend(fontsize=7)
    curves.grid(alpha=0.3)
    means, halves = zip(*[confidence_interval(measured[s]["accuracy"])
                          if measured[s]["accuracy"] else (math.nan, math.nan) for s in scales])
    finals.errorbar(scales, means, yerr=[0 if not math.isfinite(h) else h for h in halves],
                    marker="o", capsize=3, label="final test accuracy")
    finals.set_xscale("log")
    finals.set_xlabel("bias scale")
    finals.set_ylabel("final test accuracy")
    twin = finals.twinx()
    twin.plot(scales, [measured[s]["saturated"] for s in scales], "s--", color="tab:red",
              label="dense1 saturated fraction, step 1")
    twin.set_ylabel("saturated fraction (pre-activation < -5)", color="tab:red")
    finals.grid(alpha=0.3)


def _awakening(run):
    return (run.summary or {}).get("awakening_step") or {}


def _layer_steps(runs, depth):
    """Per layer (dense1..dense<depth>, logits), the awakening steps of the
    seeds, as "9" where all agree, "9-11" where they differ, "never" where
    none woke within the recorded steps."""
    names = [f"dense{i}" for i in range(1, depth + 1)] + ["logits"]
    shown = []
    for name in names:
        steps = [_awakening(run).get(name) for run in runs]
        woke = sorted({s for s in steps if s is not None})
        text = ("never" if not woke else str(woke[0]) if len(woke) == 1
                else f"{woke[0]}-{woke[-1]}")
        if woke and None in steps:
            never = steps.count(None)
            text += f" ({never} seed{'s' if never > 1 else ''} never)"
        shown.append(f"{name} {text}")
    return ", ".join(shown)


def _depth(runs_by_variant, out):
    """Question 2: how does the layer-by-layer awakening scale with depth?"""
    cells = {}
    for runs in runs_by_variant.values():
        for run in runs:
            key = (run.config.depth, run.config.scheme, run.config.bias_scale)
            cells.setdefault(key, []).append(run)
    depths = sorted({d for d, _, _ in cells})
    schemes = sorted({(i, s) for _, i, s in cells}, key=lambda k: (k[0] != "lecun", k[0]))
    table = ["| depth | init | seeds | final test accuracy | epochs to 90% (mean; seeds never) "
             "| input layer wakes at (first recorded step) | depth + 1 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    measured = {}
    for depth in depths:
        for init, scale in schemes:
            runs = cells.get((depth, init, scale), [])
            if not runs:
                continue
            healthy = _healthy(runs)
            reached = [epochs_to(run.accuracy) for run in healthy]
            woke = [_awakening(run).get("dense1") for run in runs]
            measured[(depth, init)] = {"accuracy": [run.accuracy[-1] for run in healthy],
                                       "woke": woke, "runs": runs}
            woke_text = ", ".join(sorted({"never" if s is None else str(s) for s in woke},
                                         key=lambda t: (t == "never", len(t), t)))
            never = reached.count(None)
            mean_reached = mean_of_finite(reached)
            reached_text = f"{mean_reached:.1f}" if math.isfinite(mean_reached) else "-"
            table.append(f"| {depth} | {init} | {len(runs)}/{runs[0].provenance.runs} | "
                         f"{interval_of(measured[(depth, init)]['accuracy'])} | "
                         f"{reached_text}; {never} | {woke_text} | {depth + 1} |")
    lines = ["### Awakening and depth (`beyond_depth`)", "",
             "With zero kernels, the paper observes one layer waking per update step, from the "
             "output back (Figure 12), so a model of L hidden layers should wake its input "
             "layer at step L+1. An MLP of L hidden layers: per depth and init, over seeds, "
             "the final test accuracy (95% interval), the first epoch at which test accuracy "
             f"reached {TARGET_ACCURACY:.0%}, and the first recorded step at which the input "
             "layer's kernel gradient was non-zero (recorded: every step up to L+2, then every "
             "1000th).", ""]
    figure = _plot_depth(measured, os.path.join(out, "beyond_depth.png"))
    if figure:
        lines += [f"![beyond_depth]({figure})", ""]
    lines += table + [""] + _depth_answer(measured) + [""]
    return lines


def _depth_answer(measured):
    lines = ["Measured from these runs:", ""]
    zero_schemes = sorted({i for _, i in measured if i != "lecun"})
    for init in zero_schemes:
        exact = [d for (d, i), m in sorted(measured.items())
                 if i == init and all(s == d + 1 for s in m["woke"])]
        late = [d for (d, i), m in sorted(measured.items())
                if i == init and not all(s == d + 1 for s in m["woke"])]
        sentence = (f"- {init}: the input layer woke at step L+1 in every seed at depth "
                    f"{', '.join(map(str, exact)) if exact else 'none'}")
        if late:
            sentence += f"; not at depth {', '.join(map(str, late))}"
        lines.append(sentence + ".")
        for depth in (8, 16):
            if (depth, init) in measured:
                lines.append(f"- {init}, depth {depth}, awakening step per layer over seeds: "
                             + _layer_steps(measured[(depth, init)]["runs"], depth) + ".")
    for init in zero_schemes:
        stopped = [d for (d, i), m in sorted(measured.items()) if i == init and (
            not m["accuracy"] or confidence_interval(m["accuracy"])[0] < TARGET_ACCURACY)
            and (d, "lecun") in measured
            and confidence_interval(measured[(d, "lecun")]["accuracy"])[0] >= TARGET_ACCURACY]
        lines.append(f"- {init}: " + (
            f"below {TARGET_ACCURACY:.0%} mean final test accuracy after the runs' epochs, "
            f"where lecun reached it, at depth {', '.join(map(str, stopped))}."
            if stopped else f"reached {TARGET_ACCURACY:.0%} mean final test accuracy at every "
            "depth at which lecun did."))
    return lines


def _plot_depth(measured, path):
    if not measured:
        return None
    with figure(path, "MNIST MLP: layer awakening and accuracy against depth") as (wake, finals):
        _draw_depth(measured, wake, finals)
    return os.path.basename(path)


def _draw_depth(measured, wake, finals):
    depths = sorted({d for d, _ in measured})
    top, longest = 1, 1
    for depth in depths:
        runs = measured.get((depth, "zero_normal"), {}).get("runs")
        if not runs:
            continue
        run = min(runs, key=lambda r: r.config.seed)
        steps = _awakening(run)
        names = ["logits"] + [f"dense{i}" for i in range(depth, 0, -1)]
        xs = list(range(1, len(names) + 1))
        ys = [steps.get(name) for name in names]
        wake.plot([x for x, y in zip(xs, ys) if y is not None],
                  [y for y in ys if y is not None], marker="o", markersize=3,
                  label=f"depth {depth}")
        top = max([top] + [y for y in ys if y is not None])
        longest = max(longest, len(names))
    diagonal = range(1, longest + 1)  # every point: a log axis bends a 2-point line
    wake.plot(diagonal, diagonal, "k--", linewidth=1, label="one layer per step")
    if top > 100:  # layers first seen at the every-1000-steps records
        wake.set_yscale("log")
    wake.set_xlabel("layer, counted from the output (1 = logits)")
    wake.set_ylabel("awakening step (first recorded)")
    wake.set_title("zero_normal, first seed", fontsize=9)
    wake.legend(fontsize=7)
    wake.grid(alpha=0.3)
    for init in sorted({i for _, i in measured}, key=lambda i: (i != "lecun", i)):
        points = [(d, confidence_interval(measured[(d, init)]["accuracy"])) for d in depths
                  if (d, init) in measured and measured[(d, init)]["accuracy"]]
        if points:
            finals.errorbar([d for d, _ in points], [m for _, (m, _) in points],
                            yerr=[h if math.isfinite(h) else 0 for _, (_, h) in points],
                            marker="o", capsize=3, label=init)
    finals.set_xscale("log", base=2)
    finals.set_xlabel("hidden layers (width 256)")
    finals.set_ylabel("final test accuracy")
    finals.legend(fontsize=7)
    finals.grid(alpha=0.3)


def _gap_of(reference, other):
    """reference - other for two lists of final accuracies: (gap, half-width
    with the two intervals in quadrature)."""
    (a, ha), (b, hb) = confidence_interval(reference), confidence_interval(other)
    return a - b, math.hypot(ha, hb)


def _at_epoch(runs, epoch):
    return [run.accuracy[epoch - 1] for run in _healthy(runs) if len(run.accuracy) >= epoch]


def _gap_text(gap):
    # round(...) + 0.0: no "-0.0000" for a gap that rounds to none.
    return f"{round(gap[0], 4) + 0.0:+.4f} ± {gap[1]:.4f}" if math.isfinite(gap[1]) else "-"


def _left(gap):
    """What is left of a gap, and whether it is more than seed noise."""
    verdict = "beyond seed noise" if abs(gap[0]) > gap[1] else "within seed noise of none"
    return f"leaving {_gap_text(gap)} ({verdict})"


def _moves(gap, baseline):
    """How far `gap` is from `baseline`, and whether beyond seed noise; None
    where either lacks an interval (too few seeds)."""
    delta, half = gap[0] - baseline[0], math.hypot(gap[1], baseline[1])
    if not math.isfinite(half):
        return None
    verdict = "beyond seed noise" if abs(delta) > half else "within seed noise"
    return f"{delta:+.4f} ± {half:.4f}, {verdict}"


def _gap(runs_by_variant, out, kind):
    """Question 3: where does the gap to the reference init come from? One
    of its three studies (`kind`: epochs, lr, kernel) on one dataset."""
    runs = [run for group in runs_by_variant.values() for run in group]
    dataset = runs[0].config.dataset
    shown = {"mnist": "MNIST", "cifar10": "CIFAR-10"}.get(dataset, dataset)
    paper_epochs = {"mnist": 10, "cifar10": 15}.get(dataset)

    def select(**wanted):
        return [run for run in runs if all(getattr(run.config, k) == v for k, v in wanted.items())]

    rows, lines = [], []
    if kind == "epochs":
        epochs = sorted({e for e in (paper_epochs, max(run.config.epochs for run in runs)) if e})
        gaps = {e: _gap_of(_at_epoch(select(scheme="lecun"), e),
                           _at_epoch(select(scheme="zero_normal"), e)) for e in epochs}
        rows = [f"| {e} | {interval_of(_at_epoch(select(scheme='lecun'), e))} | "
                f"{interval_of(_at_epoch(select(scheme='zero_normal'), e))} | "
                f"{_gap_text(gaps[e])} |" for e in epochs]
        head = ["| epoch | lecun | zero_normal | lecun - zero_normal |",
                "| --- | --- | --- | --- |"]
        if len(epochs) == 2 and _moves(gaps[epochs[1]], gaps[epochs[0]]):
            lines.append(f"- From epoch {epochs[0]} to epoch {epochs[1]} the gap moves by "
                         f"{_moves(gaps[epochs[1]], gaps[epochs[0]])}, "
                         f"{_left(gaps[epochs[1]])}.")
    elif kind == "lr":
        rates = sorted({run.config.learning_rate for run in runs})

        def finals(init, rate):
            return [x.accuracy[-1] for x in _healthy(select(scheme=init, learning_rate=rate))]

        gaps = {r: _gap_of(finals("lecun", r), finals("zero_normal", r)) for r in rates}
        rows = [f"| {r:g} | {interval_of(finals('lecun', r))} | "
                f"{interval_of(finals('zero_normal', r))} | {_gap_text(gaps[r])} |" for r in rates]
        head = ["| learning rate | lecun | zero_normal | lecun - zero_normal |",
                "| --- | --- | --- | --- |"]
        if 1e-3 in gaps:
            for rate in rates:
                if rate != 1e-3 and _moves(gaps[rate], gaps[1e-3]):
                    lines.append(f"- At learning rate {rate:g} the gap moves, against the "
                                 f"paper's 0.001, by {_moves(gaps[rate], gaps[1e-3])}, "
                                 f"{_left(gaps[rate])}.")
    else:
        schemes = sorted({run.config.scheme for run in runs} - {"lecun"},
                         key=lambda name: (name != "zero_normal", name))
        reference = [x.accuracy[-1] for x in _healthy(select(scheme="lecun"))]
        gaps = {name: _gap_of(reference, [x.accuracy[-1] for x in _healthy(select(scheme=name))])
                for name in schemes}
        rows = [f"| {name} | {interval_of([x.accuracy[-1] for x in _healthy(select(scheme=name))])}"
                f" | {_gap_text(gaps[name])} |" for name in schemes]
        head = [f"| scheme | final test accuracy | lecun ({interval_of(reference)}) - scheme |",
                "| --- | --- | --- |"]
        for name in schemes:
            if name != "zero_normal" and "zero_normal" in gaps and _moves(
                    gaps[name], gaps["zero_normal"]):
                lines.append(f"- {name} moves the gap, against zero_normal, by "
                             f"{_moves(gaps[name], gaps['zero_normal'])}, {_left(gaps[name])}.")
    experiment = os.path.basename(os.path.dirname(os.path.dirname(runs[0].workdir)))
    titles = {"epochs": "longer training", "lr": "the learning rate",
              "kernel": "a little kernel diversity"}
    section = [f"### The gap to the reference init: {titles[kind]} (`{experiment}`)", "",
               f"The {shown} FNN, final-epoch test accuracy over seeds (95% intervals); the "
               "gap is lecun's minus the other's, its half-width the two in quadrature.", "",
               *head, *rows, ""]
    if lines:
        section += ["Measured from these runs:", "", *lines, ""]
    figure = _plot_gap(kind, select, os.path.join(out, f"{experiment}.png"),
                       f"{shown} FNN: the gap to lecun, {titles[kind]}")
    if figure:
        section += [f"![{experiment}]({figure})", ""]
    return section


def _mean_curve(runs):
    curves = [run.accuracy for run in _healthy(runs)]
    if not curves:
        return None
    length = min(len(c) for c in curves)
    return np.mean([c[:length] for c in curves], axis=0)


def _plot_gap(kind, select, path, title):
    """The figure of one gap study: test accuracy of its variants (left) and
    the gap to lecun with its 95% interval (right), against the study's
    variable: the epoch, the learning rate, the kernel scheme."""
    runs = select()
    if not any(run.config.scheme == "lecun" for run in runs):
        return None
    with figure(path, title) as (accuracy, gap):
        if kind == "epochs":
            last = max(len(run.accuracy) for run in runs)
            epochs = list(range(1, last + 1))
            for init in ("lecun", "zero_normal"):
                curve = _mean_curve(select(scheme=init))
                if curve is not None:
                    accuracy.plot(range(1, len(curve) + 1), curve, label=init)
            accuracy.set_xlabel("epoch")
            values = [_gap_of(_at_epoch(select(scheme="lecun"), e),
                              _at_epoch(select(scheme="zero_normal"), e)) for e in epochs]
            _gap_band(gap, epochs, values)
            gap.set_xlabel("epoch")
        elif kind == "lr":
            rates = sorted({run.config.learning_rate for run in runs})
            for init in ("lecun", "zero_normal"):
                points = [(r, [x.accuracy[-1] for x in _healthy(select(scheme=init,
                                                                        learning_rate=r))])
                          for r in rates]
                points = [(r, _finite_interval(v)) for r, v in points if v]
                accuracy.errorbar([r for r, _ in points], [m for _, (m, _) in points],
                                  yerr=[h for _, (_, h) in points], marker="o", capsize=3,
                                  label=init)
            accuracy.set_xscale("log")
            accuracy.set_xlabel("learning rate")
            values = [_gap_of([x.accuracy[-1] for x in _healthy(select(scheme="lecun",
                                                                      learning_rate=r))],
                              [x.accuracy[-1] for x in _healthy(select(scheme="zero_normal",
                                                                      learning_rate=r))])
                      for r in rates]
            _gap_band(gap, rates, values, bars=True)
            gap.set_xscale("log")
            gap.set_xlabel("learning rate")
        else:
            schemes = sorted({run.config.scheme for run in runs},
                             key=lambda name: (name != "lecun", name != "zero_normal", name))
            for name in schemes:
                curve = _mean_curve(select(scheme=name))
                if curve is not None:
                    accuracy.plot(range(1, len(curve) + 1), curve, label=name)
            accuracy.set_xlabel("epoch")
            reference = [x.accuracy[-1] for x in _healthy(select(scheme="lecun"))]
            others = [name for name in schemes if name != "lecun"]
            values = [_gap_of(reference, [x.accuracy[-1] for x in _healthy(select(scheme=name))])
                      for name in others]
            _gap_band(gap, range(len(others)), values, bars=True)
            gap.set_xticks(range(len(others)), others, fontsize=7)
            gap.set_xlabel("kernel scheme (biases N(0, 1))")
        accuracy.set_ylabel("test accuracy (mean over seeds)" if kind != "lr"
                            else "final test accuracy")
        accuracy.legend(fontsize=7)
        accuracy.grid(alpha=0.3)
        gap.axhline(0, color="k", linewidth=0.8)
        gap.set_ylabel("lecun - scheme, final test accuracy" if kind != "epochs"
                       else "lecun - zero_normal, test accuracy")
        gap.grid(alpha=0.3)
    return os.path.basename(path)


def _finite_interval(values):
    mean, half = confidence_interval(values)
    return mean, half if math.isfinite(half) else 0.0


def _gap_band(axis, xs, gaps, bars=False):
    """Gaps (value, half-width) against xs: error bars, or a line in a band."""
    xs = list(xs)
    means = np.array([g[0] for g in gaps])
    halves = np.array([g[1] if math.isfinite(g[1]) else 0.0 for g in gaps])
    if bars:
        axis.errorbar(xs, means, yerr=halves, marker="o", capsize=3, linestyle="none")
    else:
        axis.plot(xs, means)
        axis.fill_between(xs, means - halves, means + halves, alpha=0.25)


SECTIONS = {"beyond_bias_scale": _bias_scale, "beyond_depth": _depth,
            **{f"beyond_gap_{kind}_{dataset}": (lambda runs, out, kind=kind: _gap(runs, out, kind))
               for kind in ("epochs", "lr", "kernel") for dataset in ("mnist", "cifar")}}
