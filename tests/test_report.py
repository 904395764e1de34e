"""The report: aggregation, figures and the table, on small hand-made run trees."""

import math
import os

import numpy as np
import pytest

from kzero.io import read_csv, read_json, write_csv, write_json
from kzero.analysis.report import (aggregate, collect, confidence_interval, plot_experiment,
                          plot_figure12, report)


def read_png(path):
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_confidence_interval_by_hand():
    # mean 0.92, sample std 0.02, t(0.975, 2) = 4.303: half-width 4.303 * 0.02 / sqrt(3)
    mean, half = confidence_interval([0.90, 0.92, 0.94])
    assert mean == pytest.approx(0.92)
    assert half == pytest.approx(4.303 * 0.02 / math.sqrt(3), rel=1e-6)
    assert math.isnan(confidence_interval([0.5])[1])


def make_run(root, experiment, variant, seed, accuracies, epochs=3, runs=3, losses=None,
             finished=True, dataset="mnist", versions=None, accelerator="cpu",
             wall_seconds=3.0, parallel_group=None, init_stream="numpy-1", **config):
    workdir = os.path.join(root, experiment, variant, f"seed_{seed}")
    os.makedirs(workdir)
    # A grid of no schemes: these hand-made runs plan nothing beyond themselves.
    config.setdefault("inits", [])
    write_json(os.path.join(workdir, "config.json"),
               dict(epochs=epochs, runs=runs, seed=seed, base_seed=0, dataset=dataset,
                    backend="jax", accelerator=accelerator, parallel_group=parallel_group,
                    versions=versions or {"kzero": "0.4.0", "jax": "0.10.2"},
                    init_stream=init_stream, **config))
    losses = losses or [1.0] * len(accuracies)
    write_csv(os.path.join(workdir, "metrics.csv"),
              ["epoch", "loss", "accuracy", "test_loss", "test_accuracy", "seconds"],
              [dict(epoch=i + 1, loss=loss, accuracy=a, test_loss=loss, test_accuracy=a,
                    seconds=1.0) for i, (a, loss) in enumerate(zip(accuracies, losses))])
    if finished:
        write_json(os.path.join(workdir, "summary.json"), {"wall_seconds": wall_seconds})
    return workdir


def test_aggregate_per_epoch(tmp_path):
    for seed, accuracies in enumerate([[0.5, 0.90, 0.91], [0.6, 0.92, 0.93], [0.7, 0.94, 0.95]]):
        make_run(tmp_path, "mnist_fnn", "fnn_lecun", seed, accuracies)
    (runs,) = collect([str(tmp_path)]).values()
    stats = aggregate(runs)
    assert [r["n"] for r in stats["rows"]] == [3, 3, 3]
    np.testing.assert_allclose([r["mean"] for r in stats["rows"]], [0.6, 0.92, 0.93])
    half = 4.303 * 0.02 / math.sqrt(3)
    assert stats["rows"][1]["ci_high"] - 0.92 == pytest.approx(half, rel=1e-6)
    assert stats["missing_seeds"] == [] and stats["diverged"] == {}


def test_report_on_partial_runs_says_what_is_missing(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "mnist_fnn", "fnn_lecun", 0, [0.90, 0.95, 0.97])
    make_run(runs, "mnist_fnn", "fnn_lecun", 2, [0.91, 0.96, 0.98])  # seed 1 is missing
    make_run(runs, "mnist_fnn", "fnn_zero_normal_x1", 0, [0.90, 0.95, 0.96])
    make_run(runs, "mnist_fnn", "fnn_zero_normal_x1", 1, [0.1, float("nan"), float("nan")],
             losses=[2.3, float("nan"), float("nan")])
    make_run(runs, "mnist_fnn", "fnn_zero_normal_x1", 2, [0.91, 0.94], finished=False)
    make_run(runs, "mnist_logreg", "logreg_lecun", 0, [0.90, 0.91, 0.92])
    # An experiment of no figure whose 20-epoch flagfile was cut to 3 epochs.
    make_run(runs, "family_cifar_cnn", "cnn_lecun", 0, [0.6, 0.7, 0.75], dataset="cifar10",
             model="cnn", runs=1)
    out = tmp_path / "out"
    stats = report([str(runs)], str(out))

    lecun = stats[("mnist_fnn", "fnn_lecun")]
    assert lecun["missing_seeds"] == [1] and lecun["rows"][-1]["n"] == 2
    zero_normal = stats[("mnist_fnn", "fnn_zero_normal_x1")]
    assert zero_normal["diverged"] == {1: 2} and zero_normal["unfinished"] == [2]
    # The unfinished seed counts where it has epochs; the diverged one nowhere.
    assert [r["n"] for r in zero_normal["rows"]] == [2, 2, 1]

    text = (out / "report.md").read_text()
    assert "missing seeds [1]" in text
    assert "seed 1 diverged at epoch 2" in text and "seeds [2] unfinished" in text
    # Three epochs of the ten of Figure 3 and its flagfile: shown, not compared.
    assert "| fnn_lecun | paper_text | 3/10 | 2/3 | 0.9750 ± " in text
    assert "| 0.975 | - | - | not comparable: 3 of 10 epochs; missing seeds [1] |" in text
    # Three of its flagfile's 20: partial, though the runs planned only 3.
    assert "| cnn_lecun | paper_text | 3/20 | 1/1 | 0.7500 | - | - | - | only 3 of 20 epochs |" in text
    assert ("- `cifar_resnet50`: `python -m kzero.run --flagfile=flags/cifar_resnet50.flags`"
            in text.split("## Not run here")[1])
    assert "## Figure 3: MNIST FNN (`mnist_fnn`)" in text
    assert "`mnist_fnn`:" not in text
    rows = read_csv(out / "results.csv")
    assert {(r["variant"], r["epoch"]) for r in rows} >= {("fnn_lecun", "3"),
                                                          ("logreg_lecun", "3")}
    # The figure draws each variant's per-epoch means and band, the partial one
    # starred, and the logistic baseline dashed.
    drawn = plot_experiment("mnist_fnn", stats, str(out / "again.png"))
    assert set(drawn) == {"fnn_lecun (n=2) *", "fnn_zero_normal_x1 (n=1) *",
                          "baseline: logreg_lecun (n=1) *"}
    lecun = drawn["fnn_lecun (n=2) *"]
    assert lecun["epochs"] == [1, 2, 3] and not lecun["dashed"]
    np.testing.assert_allclose(lecun["mean"], [0.905, 0.955, 0.975])
    half = 12.706 * np.std([0.97, 0.98], ddof=1) / math.sqrt(2)
    np.testing.assert_allclose(lecun["ci_high"][-1] - 0.975, half, rtol=1e-6)
    # The diverged seed counts nowhere, the unfinished one where it has epochs.
    np.testing.assert_allclose(drawn["fnn_zero_normal_x1 (n=1) *"]["mean"], [0.905, 0.945, 0.96])
    assert drawn["baseline: logreg_lecun (n=1) *"]["dashed"]
    for name in ("mnist_fnn.png", "mnist_logreg.png"):
        image = read_png(out / name)
        assert image.shape[:2] == (480, 720)  # 6 x 4 inches at 120 dpi
        assert image[..., :3].std() > 0.05  # not a blank canvas


def test_figure12_from_recorded_gradients(tmp_path):
    from kzero.callbacks import GRADIENT_COLUMNS

    layers = ("dense1", "dense2", "logits")
    for variant in ("fnn_lecun", "fnn_zero_normal_x1"):
        workdir = make_run(tmp_path, "cifar_fnn", variant, 0, [0.3, 0.4, 0.45],
                           dataset="cifar10")
        # zero_normal: layer i of 3 has a zero kernel gradient until step 4 - i.
        rows = [dict(step=step, layer=layer, param="kernel", count=10, mean=0, std=1,
                     min=-2 * step, q25=-step, median=0, q75=step, max=2 * step,
                     zero_fraction=float(variant != "fnn_lecun" and step < 3 - i))
                for step in range(1, 6) for i, layer in enumerate(layers)]
        write_csv(os.path.join(workdir, "gradients.csv"), GRADIENT_COLUMNS, rows)
    report([str(tmp_path)], str(tmp_path / "out"))
    assert read_png(tmp_path / "out" / "figure12.png").shape[:2] == (660, 900)
    assert "figure12.png" in (tmp_path / "out" / "report.md").read_text()
    drawn = plot_figure12(collect([str(tmp_path)]), str(tmp_path / "again.png"))
    assert set(drawn["boxes"]) == {(v, s) for v in ("fnn_lecun", "fnn_zero_normal_x1")
                                   for s in range(1, 6)}
    for (variant, step), boxes in drawn["boxes"].items():
        assert list(boxes) == list(layers)
        assert set(boxes.values()) == {(-2 * step, -step, 0, step, 2 * step)}
    assert drawn["awakening"] == {"fnn_lecun": {"dense1": 1, "dense2": 1, "logits": 1},
                                  "fnn_zero_normal_x1": {"dense1": 3, "dense2": 2, "logits": 1}}


def test_runs_of_the_kzero_01_numpy_pipeline_are_flagged(tmp_path):
    runs = tmp_path / "runs"
    old = {"keras": "3.15.1", "jax": "0.11.2"}  # kzero 0.1 recorded no version of its own
    make_run(runs, "mnist_cnn", "cnn_lecun", 0, [0.96, 0.97, 0.977], versions=old,
             accelerator="NVIDIA H100 80GB HBM3")
    make_run(runs, "mnist_cnn", "cnn_lecun", 1, [0.96, 0.97, 0.977], versions=old)
    make_run(runs, "mnist_cnn", "cnn_lecun", 2, [0.96, 0.97, 0.977],
             accelerator="NVIDIA H100 80GB HBM3")
    stats = report([str(runs)], str(tmp_path / "out"))
    assert stats[("mnist_cnn", "cnn_lecun")]["replayed_order"] == [0]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "seeds [0] saw the first epoch's example order in every epoch" in text


def test_the_paper_code_init_scope_resnet_takes_the_papers_value(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        for variant, final in (("resnet50_zero_normal_x1", 0.80),
                               ("resnet50_zero_normal_x1_paper_code", 0.86)):
            make_run(runs, "cifar_resnet50", variant, seed, [0.5] * 29 + [final + 0.001 * seed],
                     dataset="cifar10", epochs=30, runs=2)
    report([str(runs)], str(tmp_path / "out"))
    lines = (tmp_path / "out" / "report.md").read_text().splitlines()
    (paper_code,) = [line for line in lines if line.startswith("| resnet50_zero_normal_x1_pap")]
    assert "| 0.86 | +0.0005 |" in paper_code
    (full,) = [line for line in lines if line.startswith("| resnet50_zero_normal_x1 |")]
    assert "| 0.86 | -0.0595 | no | differs beyond reading precision" in full


def test_a_parallel_groups_wall_time_counts_once(tmp_path):
    for seed in (0, 1):  # trained together in 60 s: each summary says 60 s
        make_run(tmp_path, "mnist_fnn", "fnn_lecun", seed, [0.9, 0.95, 0.97], wall_seconds=60.0,
                 parallel_group=[0, 1])
    make_run(tmp_path, "mnist_fnn", "fnn_lecun", 2, [0.9, 0.95, 0.97], wall_seconds=30.0)
    stats = report([str(tmp_path)], str(tmp_path / "out"))
    assert stats[("mnist_fnn", "fnn_lecun")]["wall_seconds"] == 90.0
    assert "Summed wall time of its 3 finished runs (a parallel group once): 1.5 min" in (
        tmp_path / "out" / "report.md").read_text()


def test_an_extended_runs_wall_time_counts_its_earlier_epochs(tmp_path):
    # Trained 2 epochs (1 s each in metrics.csv), then extended to 3 by a
    # process that took 10 s: its summary holds those 10 s only.
    workdir = make_run(tmp_path, "mnist_fnn", "fnn_lecun", 0, [0.9, 0.95, 0.97], runs=1)
    write_json(os.path.join(workdir, "summary.json"),
               {"wall_seconds": 10.0, "resumed_from_epoch": 2})
    stats = report([str(tmp_path)], str(tmp_path / "out"))
    assert stats[("mnist_fnn", "fnn_lecun")]["wall_seconds"] == 12.0


def test_runs_that_have_not_finished_sum_no_wall_time(tmp_path):
    make_run(tmp_path, "mnist_fnn", "fnn_lecun", 0, [0.9], finished=False)
    report([str(tmp_path)], str(tmp_path / "out"))
    text = (tmp_path / "out" / "report.md").read_text()
    assert "No run has finished, so there is no wall time to sum." in text
    assert "0.0 min" not in text


def test_both_protocols_side_by_side_with_what_each_moves(tmp_path):
    runs = tmp_path / "runs"
    finals = {("fnn_lecun", "paper_text"): [0.52, 0.53, 0.54],
              ("fnn_lecun", "paper_code"): [0.49, 0.50, 0.51],
              ("fnn_zero_normal_x1", "paper_text"): [0.50, 0.50, 0.50],
              ("fnn_zero_normal_x1", "paper_code"): [0.48, 0.485, 0.49]}
    for (variant, protocol), values in finals.items():
        suffix = "" if protocol == "paper_text" else "_paper_code"
        for seed, final in enumerate(values):
            make_run(runs, "cifar_fnn", variant + suffix, seed, [0.3] * 14 + [final], epochs=15,
                     dataset="cifar10", protocol=protocol, scheme=variant.split("_", 1)[1][:4])
    make_run(runs, "cifar_fnn", "fnn_lecun_holdout7000", 0, [0.3, 0.4], epochs=2,
             dataset="cifar10", holdout=7000)
    report([str(runs)], str(tmp_path / "out"))
    text = (tmp_path / "out" / "report.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| fnn_")]
    assert [line.split(" | ")[:2] for line in table] == [
        ["| fnn_lecun", "paper_text"], ["| fnn_lecun", "paper_code"],
        ["| fnn_lecun", "paper_text + holdout7000"],
        ["| fnn_zero_normal_x1", "paper_text"], ["| fnn_zero_normal_x1", "paper_code"]]
    assert "| 0.49 | +0.0100 | yes |" in table[1]
    assert "not comparable: 2 of 15 epochs" in table[2]
    half = 4.303 * 0.01 / math.sqrt(3)
    assert (f"- paper_text: fnn_lecun - fnn_zero_normal_x1 = +0.0300 ± {half:.4f}; in the "
            "paper +0.0050.") in text
    both = math.hypot(half, half)
    assert (f"- fnn_lecun: 0.5300 under paper_text (paper 0.49); paper_code moves it by "
            f"-0.0300 ± {both:.4f} (within seed noise), to 0.5000, its difference to the "
            "paper from +0.0400 to +0.0100.") in text
    # Moved within seed noise: consistent with the paper, not attributed.
    assert ("- fnn_lecun: the paper's value lies outside the paper_text interval; it lies "
            "inside the interval of paper_code, but within seed noise of paper_text: the "
            "difference is not attributed.") in text
    # The not comparable row takes no part in what is measured.
    assert "holdout7000 moves" not in text


def test_runs_drawn_with_the_backends_own_init_are_marked(tmp_path):
    for seed in range(2):
        make_run(tmp_path, "mnist_fnn", "fnn_lecun", seed, [0.9] * 10, epochs=10, runs=2,
                 init_stream=None if seed else "numpy-1")
    report([str(tmp_path)], str(tmp_path / "out"))
    assert ("seeds [1] drew their initial weights from the backend's own generator"
            in (tmp_path / "out" / "report.md").read_text())


def test_the_produced_by_lines_name_the_cpu_model_each_run_recorded(tmp_path):
    # One seed rounds differently on another CPU model, so seeds trained on
    # two CPUs must show as two setups.
    for seed, cpu in enumerate(["Intel(R) Xeon(R) Processor", "AMD EPYC 9B14", None]):
        make_run(tmp_path, "mnist_fnn", "fnn_lecun", seed, [0.9] * 10, epochs=10,
                 processor=cpu, command="python -m kzero.run --flagfile=flags/mnist_fnn.flags")
    report([str(tmp_path)], str(tmp_path / "out"))
    produced_by = [line for line in (tmp_path / "out" / "report.md").read_text().splitlines()
                   if line.startswith("- `python -m kzero.run --flagfile=flags/mnist_fnn.flags`")]
    assert sorted(line.split(", on ")[1].split(", host")[0] for line in produced_by) == [
        "cpu", "cpu (AMD EPYC 9B14)", "cpu (Intel(R) Xeon(R) Processor)"]


@pytest.mark.slow
def test_a_fresh_two_epoch_run_is_shown_and_not_compared(tmp_path, data_dir):
    from test_run import flagfile, run_cli

    run_cli(flagfile("cifar_fnn"), "--scheme=lecun,zero_normal", "--runs=1", "--epochs=2",
            "--max_examples=2048", "--norecord_symmetry", f"--data_dir={data_dir}",
            f"--output_dir={tmp_path / 'runs'}")
    report([str(tmp_path / "runs")], str(tmp_path / "out"))
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Figure 8: CIFAR-10 FNN (`cifar_fnn`)" in text
    rows = [line for line in text.splitlines() if line.startswith("| fnn_")]
    assert len(rows) == 2
    for row in rows:
        cells = row.split(" | ")
        # 2 of the 15 epochs its flagfile plans, though this grid asked for 2.
        assert cells[2:4] == ["2/15", "1/1"] and cells[6:8] == ["-", "-"]
        assert cells[8].startswith("not comparable: 2 of 15 epochs")
    assert "Measured from these rows" not in text  # nothing comparable to measure


@pytest.mark.slow
@pytest.mark.once
def test_the_committed_report_regenerates_from_the_committed_runs(tmp_path):
    """docs/results/report.md and results.csv are what `python -m kzero.report
    docs/results/runs --out=docs/results` writes, byte for byte."""
    import shutil

    from conftest import REPO

    results = os.path.join(REPO, "docs", "results")
    shutil.copy(os.path.join(results, "earlier.md"), tmp_path)
    stats = report([os.path.join(results, "runs")], str(tmp_path))
    assert len(stats) >= 10
    for name in ("report.md", "results.csv"):
        with open(os.path.join(results, name)) as committed:
            assert (tmp_path / name).read_text() == committed.read(), name
    # Each committed run holds only the small files a report needs: the
    # bias-scale study also reads the forward and gradient statistics, the
    # first-steps census the gradients, stages and step losses, the family
    # section the symmetry diagnostics of its runs and, where they have batch
    # norms, their accuracy with recomputed statistics.
    for workdir in {run.workdir for runs in collect([os.path.join(results, "runs")]).values()
                    for run in runs}:
        extra = (["activations.csv", "gradients.csv"]
                 if f"{os.sep}beyond_bias_scale{os.sep}" in workdir else
                 ["gradients.csv", "stages.csv", "steps.csv"]
                 if f"{os.sep}census_" in workdir else
                 ["symmetry.csv", "bn_statistics.json"]
                 if f"{os.sep}family_cifar_cnn{os.sep}" in workdir or
                 f"{os.sep}cifar_resnet20{os.sep}" in workdir else
                 ["symmetry.csv"] if f"{os.sep}family_" in workdir else [])
        assert sorted(os.listdir(workdir)) == sorted(
            ["config.json", "metrics.csv", "summary.json", *extra])


def test_seeds_that_end_at_chance_are_named(tmp_path):
    for seed, final in enumerate([0.51, 0.10, 0.50]):
        make_run(tmp_path, "cifar_fnn", "fnn_zero_uniform_x1", seed, [0.2] * 14 + [final],
                 epochs=15, dataset="cifar10")
    stats = report([str(tmp_path)], str(tmp_path / "out"))
    assert stats[("cifar_fnn", "fnn_zero_uniform_x1")]["at_chance"] == [1]
    assert "seeds [1] ended at chance level" in (tmp_path / "out" / "report.md").read_text()


def test_a_difference_is_attributed_only_to_a_move_beyond_seed_noise(tmp_path):
    values = {"paper_text": [0.530, 0.532, 0.534], "paper_code": [0.489, 0.490, 0.491]}
    for protocol, finals in values.items():
        suffix = "" if protocol == "paper_text" else "_paper_code"
        for seed, final in enumerate(finals):
            make_run(tmp_path, "cifar_fnn", "fnn_lecun" + suffix, seed, [0.3] * 14 + [final],
                     epochs=15, dataset="cifar10", protocol=protocol)
    report([str(tmp_path)], str(tmp_path / "out"))
    assert ("- fnn_lecun: the paper's value lies outside the paper_text interval; it lies "
            "inside the interval of paper_code, moved beyond seed noise: paper_code accounts "
            "for the difference.") in (tmp_path / "out" / "report.md").read_text()


def _write_awakening(workdir, steps):
    summary = read_json(os.path.join(workdir, "summary.json"))
    write_json(os.path.join(workdir, "summary.json"), {**summary, "awakening_step": steps})


@pytest.mark.once
def test_the_depth_study_says_where_awakening_departs_from_one_layer_per_step(tmp_path):
    for depth in (2, 4):
        for init in ("lecun", "zero_normal"):
            variant = f"mlp{depth}x256_{init}" + ("_x1" if init != "lecun" else "")
            for seed in range(3):
                workdir = make_run(tmp_path, "beyond_depth", variant, seed,
                                   [0.85, 0.95] if init == "lecun" or depth == 2 else [0.5, 0.6],
                                   epochs=2, model="mlp", depth=depth, width=256, scheme=init,
                                   bias_scale=None if init == "lecun" else 1.0)
                names = [f"dense{i}" for i in range(1, depth + 1)] + ["logits"]
                steps = {n: 1 for n in names} if init == "lecun" else {
                    n: depth + 1 - i for i, n in enumerate(names)}
                if init == "zero_normal" and depth == 4 and seed == 2:
                    steps["dense1"] = 1000  # woke after the recorded first steps
                _write_awakening(workdir, steps)
    report([str(tmp_path)], str(tmp_path / "out"))
    text = (tmp_path / "out" / "report.md").read_text()
    section = text[text.index("### Awakening and depth"):]
    assert "| 4 | zero_normal | 3/3 | 0.6000 ± 0.0000 | -; 3 | 5, 1000 | 5 |" in section
    assert ("- zero_normal: the input layer woke at step L+1 in every seed at depth 2; "
            "not at depth 4.") in section
    assert ("- zero_normal: below 90% mean final test accuracy after the runs' epochs, where "
            "lecun reached it, at depth 4.") in section
    assert (tmp_path / "out" / "beyond_depth.png").exists()
    assert "## beyond_depth" not in text  # the study's own section, not a table to the paper


@pytest.mark.once
def test_the_bias_scale_study_finds_the_onset_of_instability(tmp_path):
    curves = {1.0: [0.90, 0.95, 0.96], 10.0: [0.90, 0.93, 0.94], 100.0: [0.80, 0.60, 0.85]}
    for scale, accuracy in curves.items():
        for seed in range(2):
            workdir = make_run(tmp_path, "beyond_bias_scale", f"fnn_zero_normal_x{scale:g}",
                               seed, accuracy, runs=2, model="fnn", scheme="zero_normal",
                               bias_scale=scale)
            write_csv(os.path.join(workdir, "activations.csv"),
                      ["step", "layer", "pre_mean", "pre_std", "pre_max_abs",
                       "saturated_fraction", "mean", "std", "max_abs"],
                      [dict(step=step, layer=layer, pre_mean=0, pre_std=scale,
                            pre_max_abs=scale * (3 if layer == "logits" else 1) * step,
                            saturated_fraction=0.3 if scale > 1 else 0.0, mean=0, std=1,
                            max_abs=1)
                       for step in (1, 2) for layer in ("dense1", "logits")])
    report([str(tmp_path)], str(tmp_path / "out"))
    text = (tmp_path / "out" / "report.md").read_text()
    section = text[text.index("### Large bias scales"):]
    assert "| 100 | 2/2 | 0.8500 ± 0.0000 | 0.2000 | 2 of 2 | 0.300 | 300 | 600 |" in section
    assert "- Training first turned unstable at bias scale 100 (2 seeds)" in section
    assert "consistent with the paper's guess" in section


@pytest.mark.once
def test_the_gap_studies_say_what_moves_the_gap(tmp_path):
    finals = {("lecun", 1e-3): [0.97, 0.971, 0.972], ("zero_normal", 1e-3): [0.96, 0.961, 0.962],
              ("lecun", 1e-4): [0.95, 0.951, 0.952], ("zero_normal", 1e-4): [0.95, 0.951, 0.952]}
    for (init, rate), values in finals.items():
        variant = f"fnn_{init}" + ("_x1" if init != "lecun" else "") + f"_lr{rate:g}"
        for seed, value in enumerate(values):
            make_run(tmp_path, "beyond_gap_lr_mnist", variant, seed, [0.5, value], epochs=2,
                     model="fnn", scheme=init, learning_rate=rate, learning_rates=[1e-4, 1e-3],
                     bias_scale=None if init == "lecun" else 1.0)
    report([str(tmp_path)], str(tmp_path / "out"))
    text = (tmp_path / "out" / "report.md").read_text()
    section = text[text.index("### The gap to the reference init: the learning rate"):]
    assert "| 0.001 | 0.9710 ± 0.0025 | 0.9610 ± 0.0025 | +0.0100 ± 0.0035 |" in section
    assert ("- At learning rate 0.0001 the gap moves, against the paper's 0.001, by "
            "-0.0100 ± 0.0050, beyond seed noise, leaving +0.0000 ± 0.0035 (within seed noise "
            "of none).") in section
    # The study's figure: accuracy and gap against the learning rate, linked.
    assert "![beyond_gap_lr_mnist](beyond_gap_lr_mnist.png)" in section
    assert read_png(tmp_path / "out" / "beyond_gap_lr_mnist.png").shape[:2] == (440, 1100)


README_ROWS = {("3", "MNIST FNN"): ("mnist_fnn", "fnn"), ("5", "MNIST CNN"): ("mnist_cnn", "cnn"),
               ("8", "CIFAR-10 FNN"): ("cifar_fnn", "fnn")}


def test_the_readmes_results_table_is_the_committed_reports():
    """Each row of the README's headline table is the final epoch of its variant
    in docs/results/results.csv: mean and 95% half-width, as the report prints."""
    from conftest import REPO

    text = open(os.path.join(REPO, "README.md")).read()
    table = text.split("## Results", 1)[1].split("\n\n")[2]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    final = {}
    for row in read_csv(os.path.join(REPO, "docs", "results", "results.csv")):
        final[(row["experiment"], row["variant"])] = row  # epochs ascend: the last stays
    assert len(rows) == 7
    for figure, model, init, _, measured in rows:
        experiment, prefix = README_ROWS[(figure.strip("| "), model)]
        variant = f"{prefix}_{init.split()[0]}" + ("" if init.startswith("lecun") else "_x1")
        row = final[(experiment, variant)]
        half = (float(row["ci_high"]) - float(row["ci_low"])) / 2
        assert measured.strip(" |") == f"{float(row['mean']):.4f} ± {half:.4f}", variant


def _table_after(text, heading):
    """The cells of the rows of the first markdown table after `heading`."""
    rest = text.split(heading, 1)[1]
    table = rest[rest.index("\n| "):].split("\n\n")[0]
    return [line.strip("| ").split(" | ") for line in table.strip().splitlines()[2:]]


def test_the_readmes_family_answer_and_reproducings_gaps_are_the_committed_reports():
    """The README's zero-init family answer is the report's, every row and
    cell; docs/reproducing.md quotes the report's ResNet-20 differences."""
    from conftest import REPO
    from kzero.analysis.family import ANSWER_HEADER

    readme = open(os.path.join(REPO, "README.md")).read()
    report_text = open(os.path.join(REPO, "docs", "results", "report.md")).read()
    answer = _table_after(report_text, "Which start trains best, per model")
    assert [row[0] for row in answer] == ["fnn", "cnn", "resnet20"]
    assert ANSWER_HEADER in readme
    assert _table_after(readme, "The zero-init family side by side") == answer
    # The README's one-line reading of that table.
    ahead = [row[0] for row in answer
             if row[4].split(": ")[-1].startswith("+") and row[4].endswith("beyond seed noise")]
    said = "No zero-weight start is ahead of the reference beyond seed noise on any of the three."
    assert (said in readme.replace("\n", " ")) == (not ahead), ahead
    # And its reading of the last column, the gaps with recomputed statistics.
    gaps = [row[6] for row in answer if row[6] != "-"]
    said = "the paper's scheme's gap to lecun is beyond seed noise."
    assert (said in readme.replace("\n", " ")) == (
        bool(gaps) and all(gap.startswith("-") and gap.endswith("beyond seed noise")
                           for gap in gaps)), gaps
    reproducing = open(os.path.join(REPO, "docs", "reproducing.md")).read().replace("\n", " ")
    for scheme in ("zero_normal", "zero_normal_bn"):
        gap = report_text.split(f"resnet20_lecun - resnet20_{scheme}_x1 = ", 1)[1].split(".\n")[0]
        assert f"{gap} (" in reproducing, scheme


def test_a_damaged_run_is_left_out_of_the_report_in_one_line_and_counted(tmp_path, capsys):
    for seed in range(4):
        make_run(tmp_path, "mnist_fnn", "fnn_lecun", seed, [0.9, 0.95, 0.97], runs=4)
    seed_dir = tmp_path / "mnist_fnn" / "fnn_lecun"
    (seed_dir / "seed_1" / "summary.json").write_text('{"wall_sec')
    (seed_dir / "seed_2" / "config.json").write_text("{not json")
    metrics = seed_dir / "seed_3" / "metrics.csv"
    metrics.write_text(metrics.read_text()[:-6])  # the last row cut mid-line
    stats = report([str(tmp_path)], str(tmp_path / "out"))
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("kzero.report: left out ") for line in err)
    for seed, name in ((1, "summary.json"), (2, "config.json"), (3, "metrics.csv")):
        assert any(str(seed_dir / f"seed_{seed}" / name) in line for line in err), name
    assert stats[("mnist_fnn", "fnn_lecun")]["rows"][-1]["n"] == 1
    text = (tmp_path / "out" / "report.md").read_text()
    assert "3 runs could not be read and are left out of every table and figure below:" in text


def test_a_planned_variant_that_never_started_is_named(tmp_path, data_dir, capsys):
    from test_run import run_cli

    # Shard 0 of 2 trains every 2nd run of the grid: the lecun variant only.
    run_cli("--dataset=mnist", "--model=logreg", "--scheme=lecun,zero", "--runs=1",
            "--epochs=1", "--max_examples=128", "--shard=0/2", f"--data_dir={data_dir}",
            f"--output_dir={tmp_path / 'runs'}")
    capsys.readouterr()
    report([str(tmp_path / "runs")], str(tmp_path / "out"))
    assert ("kzero.report: mnist_logreg: 1 planned variant never started: logreg_zero"
            in capsys.readouterr().err)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Planned by this experiment's grid and never started" in text
    assert "`logreg_zero` (1 seed)." in text


def test_a_variant_with_no_finished_epoch_is_not_called_diverged(tmp_path):
    make_run(tmp_path, "mnist_fnn", "fnn_lecun", 0, [0.9, 0.95, 0.97])
    make_run(tmp_path, "mnist_fnn", "fnn_zero_normal_x1", 0, [], finished=False)
    report([str(tmp_path)], str(tmp_path / "out"))
    (row,) = [line for line in (tmp_path / "out" / "report.md").read_text().splitlines()
              if line.startswith("| fnn_zero_normal_x1 |")]
    assert "| no epoch yet |" in row and "no run has finished an epoch" in row
    assert "diverge" not in row


def test_the_family_section_is_computed_from_its_runs(tmp_path):
    """Per variant: the intervals, the first epoch at the target and the
    seconds of training until then, the last awakening, the init check's
    warning; and the sentence that names the best start, and the best zero one."""
    from kzero.analysis.family import family_section

    runs = tmp_path / "runs"
    curves = {"fnn_lecun": ("lecun", [[0.95, 0.975, 0.98], [0.96, 0.97, 0.985]]),
              "fnn_zero_hadamard": ("zero_hadamard", [[0.90, 0.96, 0.972], [0.91, 0.95, 0.960]]),
              "fnn_zero_normal_x1": ("zero_normal", [[0.90, 0.93, 0.95], [0.90, 0.94, 0.95]])}
    for variant, (init, seeds) in curves.items():
        for seed, accuracies in enumerate(seeds):
            workdir = make_run(runs, "family_mnist_fnn", variant, seed, accuracies, runs=2,
                               model="fnn", scheme=init)
            write_json(os.path.join(workdir, "summary.json"), {
                "wall_seconds": 3.0,
                "awakening_step": {"dense1": 1 if init == "lecun" else 2 + seed, "logits": 1},
                "init_check": {"erased_symmetry_breaking": ["dense1"] if init == "zero_normal"
                               else []}})
            if init == "zero_normal":  # the symmetry diagnostics of its last epoch count
                write_csv(os.path.join(workdir, "symmetry.csv"),
                          ["epoch", "layer", "units", "distinct_units", "dead_fraction"],
                          [dict(epoch=seed, layer="dense1", units=500, distinct_units=1,
                                dead_fraction=1.0),
                           dict(epoch=3, layer="dense1", units=500, distinct_units=500 - seed,
                                dead_fraction=0.004 * (seed + 1)),
                           dict(epoch=3, layer="logits", units=10, distinct_units=10,
                                dead_fraction=0.1)])
            # scripts/bn_statistics.py's file counts where it describes the last epoch.
            if init != "zero_normal":
                write_json(os.path.join(workdir, "bn_statistics.json"), {
                    "epoch": 3 - (init == "zero_hadamard") * seed,
                    "recomputed_statistics": accuracies[-1] + 0.01})
    make_run(runs, "mnist_fnn", "fnn_lecun", 0, [0.99, 0.99, 0.99])  # not a family experiment
    lines = family_section(collect([str(runs)]), str(tmp_path))
    assert os.path.exists(tmp_path / "family.png")
    table = lines[:lines.index(next(line for line in lines if line.startswith("Which start")))]
    rows = {cells[2].strip("`"): cells for cells in (line.strip("| ").split(" | ")
                                                      for line in table
                                                      if line.startswith("| fnn |"))}
    assert list(rows) == ["fnn_lecun", "fnn_zero_hadamard", "fnn_zero_normal_x1"]
    lecun, hadamard, zero_normal = rows.values()
    half = 12.706 * np.std([0.98, 0.985], ddof=1) / math.sqrt(2)
    assert lecun[5] == f"{0.9825:.4f} ± {half:.4f}" and lecun[6] == f"0.9550 ± {half * 2:.4f}"
    # Epochs 2 and 2 reach 0.97 (2 seconds each); for ZerO only seed 0, at epoch 3.
    assert lecun[8:10] == ["0.97: 2.0", "2"]
    assert hadamard[8:10] == ["0.97: 3.0 (1 of 2 seeds)", "3"]
    assert zero_normal[8:10] == ["0.97: not reached", "-"]
    assert [lecun[10], hadamard[10]] == ["step 1", "step 3"]
    # Before training: seed 0's epoch 0 (499 copies, every unit dead); seed 1
    # recorded from epoch 1 on, so only one of the two seeds counts.
    assert [r[11] for r in rows.values()] == [
        "not recorded", "not recorded", "499 / 500 of 500 (1 of 2 seeds)"]
    # After the last epoch: copies 0 and 1, dead 2 + 1 and 4 + 1 units: means
    # 0.5 and 4 of 510 units.
    assert [r[12] for r in rows.values()] == ["not recorded", "not recorded", "0.5 / 4 of 510"]
    assert [r[13] for r in rows.values()] == ["no", "no", "yes"]
    # ZerO's seed 1 file is of an earlier epoch than its last: left out.
    assert [r[14] for r in rows.values()] == [
        f"{0.9925:.4f} ± {half:.4f}", f"{0.982:.4f} (1 of 2 seeds)", "-"]
    assert {r[4] for r in rows.values()} == {"3 of 10"}
    assert "from the runs of flags/family_mnist_fnn.flags. Columns:" in lines[2]
    (answer,) = [line.strip("| ").split(" | ") for line in lines
                 if line.startswith("| fnn | 3 of 10 |")]
    # Three of the ten epochs flags/family_mnist_fnn.flags plans: said, not called final.
    # ZerO's two seeds spread widely (0.972, 0.960): within seed noise of lecun.
    zero_half = 12.706 * np.std([0.972, 0.960], ddof=1) / math.sqrt(2)
    assert answer == [
        "fnn", "3 of 10", f"PyTorch's default (the paper's reference), 0.9825 ± {half:.4f}",
        "ZerO (Zhao et al.)",
        f"ZerO (Zhao et al.): {0.966 - 0.9825:+.4f} ± {math.hypot(zero_half, half):.4f}, "
        "within seed noise",
        f"{0.95 - 0.9825:+.4f} ± {half:.4f}, beyond seed noise", "-"]
    # The family's experiments without runs are named, with their command.
    assert lines[-2] == (
        "No runs here yet of `family_cifar_cnn` (`python -m kzero.run "
        "--flagfile=flags/family_cifar_cnn.flags`), `cifar_resnet20` (`python -m kzero.run "
        "--flagfile=flags/cifar_resnet20.flags`).")
    from kzero.analysis.family import _method
    from kzero.config import RunConfig

    scoped = RunConfig(dataset="cifar10", model="resnet20", scheme="zero_normal",
                       init_scope="paper_code")
    assert _method(scoped) == "zero weights + N(0, 1) biases (the paper), paper_code scope"


def test_the_census_keeps_a_gpu_run_apart_from_the_cpu_runs_of_its_backend():
    """Rounding differs between a CPU and a GPU, so a census row is per backend
    and accelerator: the committed ResNet-50 runs under jax on this CPU (10
    steps) and on an H200 (30 steps) are two rows, each of its own run."""
    from conftest import REPO
    from kzero.analysis.first_steps import census_rows

    rows = census_rows(collect([os.path.join(REPO, "docs", "results", "runs")]))
    cpu = rows[("resnet50", "resnet50_zero_normal_x1", "jax")]
    gpu = rows[("resnet50", "resnet50_zero_normal_x1", "jax on NVIDIA H200")]
    assert [m["steps"] for m in cpu] == [10] and [m["steps"] for m in gpu] == [30]
    assert [m["awake"] for m in cpu] == [34] and [m["awake"] for m in gpu] == [9]


def test_the_family_answer_gives_the_papers_gap_with_recomputed_statistics_where_every_seed_has_them(
        tmp_path):
    from kzero.analysis.family import family_section

    recomputed = {"fnn_lecun": ("lecun", [0.95, 0.97], [0.960, 0.961]),
                  "fnn_zero_normal_x1": ("zero_normal", [0.70, 0.90], [0.930, 0.931])}
    for variant, (scheme, finals, recomputed_finals) in recomputed.items():
        for seed, (final, recomputed_final) in enumerate(zip(finals, recomputed_finals)):
            workdir = make_run(tmp_path, "family_mnist_fnn", variant, seed, [0.5, 0.6, final],
                               runs=2, model="fnn", scheme=scheme)
            write_json(os.path.join(workdir, "bn_statistics.json"),
                       {"epoch": 3, "recomputed_statistics": recomputed_final})

    def answer():
        lines = family_section(collect([str(tmp_path)]), str(tmp_path))
        return next(line for line in lines if line.startswith("| fnn | 3 of 10 |")
                    ).strip("| ").split(" | ")

    def half(values):
        return 12.706 * np.std(values, ddof=1) / math.sqrt(2)

    # With moving statistics the gap is within seed noise; recomputed, beyond it.
    assert answer()[5] == (f"{0.80 - 0.96:+.4f} ± "
                           f"{math.hypot(half([0.70, 0.90]), half([0.95, 0.97])):.4f}, "
                           "within seed noise")
    assert answer()[6] == (f"{0.9305 - 0.9605:+.4f} ± "
                           f"{math.hypot(half([0.930, 0.931]), half([0.960, 0.961])):.4f}, "
                           "beyond seed noise")
    # A seed whose file describes an earlier epoch leaves the gap unmeasured.
    workdir = os.path.join(tmp_path, "family_mnist_fnn", "fnn_lecun", "seed_1")
    write_json(os.path.join(workdir, "bn_statistics.json"),
               {"epoch": 2, "recomputed_statistics": 0.961})
    assert answer()[6] == "-"


def test_the_family_answer_compares_starts_at_an_epoch_they_all_have(tmp_path):
    from kzero.analysis.family import family_section

    for variant, scheme, curve in (("fnn_lecun", "lecun", [0.90, 0.95, 0.99]),
                                   ("fnn_he", "he", [0.92, 0.96])):
        for seed in range(2):
            make_run(tmp_path, "family_mnist_fnn", variant, seed, curve, epochs=len(curve),
                     runs=2, model="fnn", scheme=scheme)
    lines = family_section(collect([str(tmp_path)]), str(tmp_path))
    answer = next(line for line in lines if line.startswith("| fnn | 2 "))
    assert answer.startswith("| fnn | 2 (the last every start has) | He, 0.9600")
