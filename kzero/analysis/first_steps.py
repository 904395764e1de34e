"""The report section "Figure 11: the first steps": how deep
networks with batch norm wake from each init scheme, computed from the runs
of the census flagfiles (`flags/census_*.flags`: a few update steps, each
recorded).

Per run it reads `gradients.csv` (which trainable variables have a non-zero
gradient at each step, and each kernel's awakening step), `stages.csv` (how
much each stage's output depends on the input), `steps.csv` (each step's
training loss), `metrics.csv` (the test accuracy after the steps) and the
init check in `summary.json`. Rows are (model, variant, backend), since
rounding, and so waking, may differ by backend.
"""

import math
import os

import numpy as np

from kzero.analysis.plots import figure
from kzero.analysis.stats import interval_of, mean_of_finite, run_csv

__all__ = ["CENSUS_PREFIX", "WOKEN_DEPENDENCE", "census_rows", "first_steps_section"]

# The experiments of the census flagfiles are named census_<model>[_<backend>].
CENSUS_PREFIX = "census_"
# A stage whose input dependence passes this has come to depend on the input:
# well above rounding error (exactly 0, or under 1e-9, at a zero-weight start),
# well below what a trained layer shows (0.1 to 1).
WOKEN_DEPENDENCE = 1e-3


def _steps(run):
    return run.config.max_steps or 0


def _fraction_with_gradient(rows):
    """{step: fraction of trainable variables with a non-zero gradient}."""
    by_step = {}
    for row in rows:
        by_step.setdefault(row["step"], []).append(row["zero_fraction"] < 1.0)
    return {step: float(np.mean(flags)) for step, flags in sorted(by_step.items())}


def _dependence(rows, stage):
    """{step: input dependence of `stage`}."""
    return {row["step"]: float(row["input_dependence"]) for row in rows if row["stage"] == stage}


def _first_dependent_step(curve):
    return next((step for step, value in sorted(curve.items()) if value > WOKEN_DEPENDENCE), None)


def census_rows(runs_by_key):
    """{(model, base variant, backend): [per-run measurements]} for the runs
    of the census experiments."""
    found = {}
    for (experiment, _), runs in sorted(runs_by_key.items()):
        if not experiment.startswith(CENSUS_PREFIX):
            continue
        for run in runs:
            if run.summary is None:
                continue
            gradients = run_csv(run, "gradients.csv")
            stages = run_csv(run, "stages.csv")
            losses = [row["loss"] for row in run_csv(run, "steps.csv")]
            awakening = run.summary.get("awakening_step") or {}
            check = run.summary.get("init_check") or {}
            fraction = _fraction_with_gradient(gradients)
            stage_names = list(dict.fromkeys(row["stage"] for row in stages))
            key = (run.config.model, _variant_of(run), _backend_of(run))
            found.setdefault(key, []).append({
                "steps": _steps(run),
                "kernels": len(awakening),
                "awake": sum(step is not None for step in awakening.values()),
                "last_awake": max((s for s in awakening.values() if s is not None), default=None),
                "awakening": awakening,
                "fraction": fraction,
                "stages": {name: _dependence(stages, name) for name in stage_names},
                "losses": losses,
                "accuracy": run.accuracy[-1] if run.accuracy else math.nan,
                "erased": len(check.get("erased_symmetry_breaking", [])),
                "biased": check.get("biased_layers"),
            })
    return found


def _backend_of(run):
    """The backend, and the accelerator where it was not the CPU: rounding,
    and so waking, may differ between them."""
    accelerator = run.provenance.accelerator
    backend = run.provenance.backend
    return backend if accelerator in (None, "cpu") else f"{backend} on {accelerator}"


def _variant_of(run):
    """The run's variant less its step count: `cnn_zero_normal_x1`, and what
    else departs from the protocol (`_bn_eps0.001`, `_exact_bn_mean`)."""
    return run.config.variant.replace(f"_{run.config.max_steps}steps", "")


def _final_dependence(measured, stage="logits"):
    """Each run's input dependence of `stage` at its last recorded step."""
    curves = [m["stages"].get(stage) or {} for m in measured]
    return [curve[max(curve)] if curve else math.nan for curve in curves]


def _row(model, variant, backend, measured):
    steps = measured[0]["steps"]
    fractions_first = [m["fraction"].get(1, math.nan) for m in measured]
    fractions_last = [m["fraction"].get(steps, math.nan) for m in measured]
    awake = f"{mean_of_finite([m['awake'] for m in measured]):.1f} of {measured[0]['kernels']}"
    last = [m["last_awake"] for m in measured if m["last_awake"] is not None]
    logits_step = [_first_dependent_step(m["stages"].get("logits", {})) for m in measured]
    dependent = [s for s in logits_step if s is not None]
    first_loss = mean_of_finite([m["losses"][0] for m in measured if m["losses"]])
    last_loss = mean_of_finite([m["losses"][-1] for m in measured if m["losses"]])
    erased = measured[0]["erased"]
    return (f"| {model} | {variant} | {backend} | {len(measured)} | {steps} | "
            f"{erased} of {measured[0]['biased']} | "
            f"{mean_of_finite(fractions_first):.3f} | {mean_of_finite(fractions_last):.3f} | {awake} | "
            f"{max(last) if last else '-'} | "
            f"{len(dependent)} of {len(measured)}"
            f"{f' (step {min(dependent)}-{max(dependent)})' if dependent else ''} | "
            f"{mean_of_finite(_final_dependence(measured)):.3g} | {first_loss:.3f} -> {last_loss:.3f} | "
            f"{interval_of([m['accuracy'] for m in measured])} |")


def _answers(rows):
    """Sentences computed from the rows: does each all-layer zero_normal row
    wake, and does what wakes depend on the input and learn?"""
    lines = []
    for (model, variant, backend), measured in sorted(rows.items()):
        if "zero_normal_x1" not in variant or variant.endswith("paper_code") or \
                "zero_normal_bn" in variant:
            continue
        steps = measured[0]["steps"]
        awake = mean_of_finite([m["awake"] for m in measured])
        kernels = measured[0]["kernels"]
        dependent = sum(_first_dependent_step(m["stages"].get("logits", {})) is not None
                        for m in measured)
        losses = [(m["losses"][0], m["losses"][-1]) for m in measured if m["losses"]]
        fell = sum(last < first for first, last in losses)
        state = ("stays dead: no kernel below the logits gets a gradient" if awake <= 1 else
                 f"wakes: {awake:.1f} of {kernels} kernels have had a gradient by step {steps}")
        lines.append(
            f"- {model}, {variant} under {backend} ({len(measured)} "
            f"seed{'s' if len(measured) > 1 else ''}): {state}; the "
            f"logits depend on the input (input dependence > {WOKEN_DEPENDENCE:g}) in "
            f"{dependent} of {len(measured)} seeds; the training loss fell from step 1 to "
            f"step {steps} in {fell} of {len(losses)}; test accuracy after the steps "
            f"{interval_of([m['accuracy'] for m in measured])}.")
    return lines


# The batch norm variants that test whether rounding wakes a zero_normal net.
ROUNDING_TESTS = {"_bn_eps0.001": "a batch norm epsilon of 1e-3 instead of 1e-5 (rounding error "
                  "divided by a 10 times larger sqrt(epsilon))",
                  "_exact_bn_mean": "exact centring of a constant channel (no rounding error "
                  "left to amplify)"}


def _summary(measured):
    steps = measured[0]["steps"]
    dependent = [_first_dependent_step(m["stages"].get("logits", {})) for m in measured]
    dependent = [step for step in dependent if step is not None]
    return (f"{mean_of_finite([m['awake'] for m in measured]):.1f} of {measured[0]['kernels']} kernels "
            f"awake by step {steps}, logits depending on the input in {len(dependent)} of "
            f"{len(measured)} seeds"
            f"{f' (from step {min(dependent)})' if dependent else ''}, loss at step {steps} "
            f"{mean_of_finite([m['losses'][-1] for m in measured if m['losses']]):.3f}, test accuracy "
            f"{interval_of([m['accuracy'] for m in measured])}")


def _rounding_answers(rows):
    """What moves when the rounding is made smaller or exact: each such
    variant against the plain one of its model and backend."""
    lines = []
    for (model, variant, backend), measured in sorted(rows.items()):
        for suffix, what in ROUNDING_TESTS.items():
            plain = rows.get((model, variant.replace(suffix, ""), backend))
            if suffix in variant and plain:
                lines.append(f"- {model}, {variant.replace(suffix, '')} under {backend}, with "
                             f"{what}: {_summary(measured)}; with the plain batch norm: "
                             f"{_summary(plain)}.")
    return lines


def _plot(rows, model, path):
    chosen = {key: measured for key, measured in rows.items() if key[0] == model}
    with figure(path, f"{model}: the first update steps (mean over seeds)", panels=3) as axes:
        for (_, variant, backend), measured in sorted(chosen.items()):
            label = f"{variant} ({backend})"
            steps = sorted(measured[0]["fraction"])
            axes[0].plot(steps, [mean_of_finite([m["fraction"].get(s) for m in measured])
                                 for s in steps], label=label)
            dependence = [m["stages"].get("logits", {}) for m in measured]
            stage_steps = sorted(dependence[0])
            axes[1].plot(stage_steps, [max(mean_of_finite([d.get(s) for d in dependence]), 1e-12)
                                       for s in stage_steps], label=label)
            losses = [m["losses"] for m in measured if m["losses"]]
            if losses:
                length = min(len(loss) for loss in losses)
                axes[2].plot(range(1, length + 1),
                             np.mean([loss[:length] for loss in losses], axis=0), label=label)
        axes[0].set(xlabel="update step", ylabel="trainable variables with a gradient",
                    ylim=(0, 1.05))
        axes[1].set(xlabel="update step", ylabel="input dependence of the logits", yscale="log")
        axes[1].axhline(WOKEN_DEPENDENCE, color="grey", linestyle=":", linewidth=1)
        axes[2].set(xlabel="update step", ylabel="training loss")
        axes[2].legend(fontsize=7)


def first_steps_section(runs_by_key, out):
    """The section's markdown lines, its figures drawn into `out`; [] without
    census runs."""
    rows = census_rows(runs_by_key)
    if not rows:
        return []
    lines = ["## Figure 11: the first steps", "",
             "How networks with batch norm wake from each init scheme, over the first update "
             "steps of the paper's protocol (Adam 1e-3, batch 128; flags/census_*.flags). A "
             "batch norm subtracts each channel's batch mean, and so removes the output of a "
             "zero-kernel conv, which is its activated bias, one constant per channel "
             "(`kzero.check_init`). A row is a model, variant and backend, and the "
             "accelerator where it was not the CPU, since rounding decides part of it. "
             "Columns: the init check's count of random biases so "
             "removed; the fraction of trainable variables with a non-zero gradient at step 1 "
             "and at the last step; kernels that have had a non-zero gradient by the last step "
             "(mean over seeds) and the latest step at which one woke; the seeds whose logits "
             f"came to depend on the input (input dependence above {WOKEN_DEPENDENCE:g}: the "
             "spread across the probe batch over the output's size), and at which steps; the "
             "logits' input dependence at the last step; the training loss at step 1 and at "
             "the last step; and the test accuracy after the steps (95% interval over seeds).",
             ""]
    for model in sorted({key[0] for key in rows}):
        figure = f"first_steps_{model}.png"
        _plot(rows, model, os.path.join(out, figure))
        lines += [f"### {model}", "", f"![{model}]({figure})", "",
                  "| model | variant | backend | seeds | steps | random biases removed | "
                  "with gradient, step 1 | with gradient, last step | kernels awake | last to "
                  "wake | logits depend on input | logits' input dependence | loss | test "
                  "accuracy |", "| --- " * 14 + "|"]
        lines += [_row(*key, measured) for key, measured in sorted(rows.items())
                  if key[0] == model]
        lines.append("")
    answers = _answers(rows)
    if answers:
        lines += ["All-layer zero_normal, row by row:", "", *answers, ""]
    rounding = _rounding_answers(rows)
    if rounding:
        lines += ["Whether rounding in the batch norms wakes it:", "", *rounding, ""]
    return lines
