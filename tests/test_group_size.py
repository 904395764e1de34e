"""--parallel_runs=auto: the group size measured fastest, kept for reruns."""

import os

import pytest

import kzero.group_size as group_size
from kzero.config import Grid
from kzero.grid import expand
from kzero.group_size import CHOICES_FILE, candidate_sizes, choose_group_size
from kzero.io import read_csv, read_json


def family(runs=5, epochs=10):
    grid = Grid.make(scheme=("lecun", "zero_normal"), runs=runs, epochs=epochs)
    return expand(grid)


def rates(table):
    def measure(configs, arrays):
        return table[len(configs)]
    return measure


def test_candidate_sizes_double_up_to_the_family():
    assert candidate_sizes(10) == [1, 2, 4, 8, 10]
    assert candidate_sizes(8) == [1, 2, 4, 8]
    assert candidate_sizes(1) == [1]


def test_auto_takes_the_fastest_size_and_a_rerun_keeps_it(tmp_path, mnist):
    lines = []
    runs = family()  # 2 schemes x 5 seeds, 10 epochs of 469 steps
    chosen = choose_group_size(runs, mnist, str(tmp_path), lines.append,
                               measure=rates({1: 100.0, 2: 180.0, 4: 300.0, 8: 310.0}))
    # 8 gains under 5% over 4: the doubling stops there, 10 is not timed.
    assert chosen == 4
    assert lines == ["kzero: --parallel_runs=auto: run-steps/s by group size 1: 100.0, "
                     "2: 180.0, 4: 300.0, 8: 310.0; groups of 4 for the 10 runs of "
                     "fnn_lecun/seed_0's family"]
    kept = read_json(tmp_path / CHOICES_FILE)
    (entry,) = kept.values()
    assert entry["size"] == 4 and entry["runs"][-1] == "fnn_zero_normal_x1/seed_4"
    assert entry["run_steps_per_s"] == {"1": 100.0, "2": 180.0, "4": 300.0, "8": 310.0}

    def unmeasurable(configs, arrays):
        raise AssertionError("a kept choice is not measured again")

    lines.clear()
    assert choose_group_size(runs, mnist, str(tmp_path), lines.append,
                             measure=unmeasurable) == 4
    assert "as chosen before" in lines[0]
    # Two shards of the grid (other runs, same architecture) choose apart.
    for shard in (runs[::2], runs[1::2]):
        assert choose_group_size(shard, mnist, str(tmp_path), lines.append,
                                 measure=rates({1: 100.0, 2: 102.0})) == 1
    assert sorted(entry["size"] for entry in read_json(tmp_path / CHOICES_FILE).values()) == [
        1, 1, 4]


def test_auto_keeps_single_runs_where_groups_are_slower_or_the_grid_is_small(tmp_path, mnist):
    lines = []
    assert choose_group_size(family(), mnist, str(tmp_path), lines.append,
                             measure=rates({1: 100.0, 2: 90.0})) == 1
    assert "groups of 1" in lines[0]
    # 2 runs x 2 epochs of 469 steps: too few to repay the timing; nothing measured.
    lines.clear()
    assert choose_group_size(family(runs=1, epochs=2), mnist, str(tmp_path / "small"),
                             lines.append, measure=rates({})) == 1
    assert lines == [] and not (tmp_path / "small").exists()


def test_auto_stops_where_the_group_would_not_fit_in_memory(tmp_path, mnist, monkeypatch):
    from kzero.train import build_run_model

    lines = []
    per_replica = group_size.replica_bytes(build_run_model(family()[0]), 128)
    # The MNIST FNN: 397,510 parameters; per example the images (784), their
    # flattening (784), dense1 (500) and the logits (10).
    assert per_replica == 4 * (4 * 397_510 + 3 * 128 * (784 + 784 + 500 + 10))
    # Half of the free memory holds 2 replicas, not 4.
    monkeypatch.setattr(group_size, "free_memory_bytes", lambda: 5 * per_replica)
    assert choose_group_size(family(), mnist, str(tmp_path), lines.append,
                             measure=rates({1: 100.0, 2: 190.0, 4: 350.0})) == 2
    assert "4 would not fit in memory" in lines[0]


@pytest.mark.slow
@pytest.mark.once
def test_an_auto_grid_trains_in_the_groups_it_measured_and_resumes_a_lone_checkpoint(
        tmp_path, mnist, monkeypatch, capsys):
    """A real measurement on this machine: whatever size wins, the runs train
    in groups of it; a run holding a checkpoint of its own resumes alone."""
    from kzero.grid import run_grid
    from kzero.train import CHECKPOINT, MODEL_FILE, train

    monkeypatch.setattr(group_size, "MIN_RUN_STEPS", 0)
    grid = Grid.make(scheme=("lecun", "zero_normal"), runs=2, epochs=2, max_examples=1024,
                     parallel_runs="auto", output_dir=str(tmp_path / "runs"), experiment="auto",
                     record_gradients=False, record_symmetry=False, record_activations=False)
    variant = tmp_path / "runs" / "auto" / "fnn_zero_normal_x1"
    # zero_normal seed 1 was trained run by run for one epoch, then stopped.
    (lone,) = [run.replace(epochs=1) for run in grid.expand()
               if (run.scheme, run.seed) == ("zero_normal", 1)]
    train(lone, str(variant / "seed_1"), mnist, verbose=0)
    os.remove(variant / "seed_1" / "summary.json")
    os.replace(variant / "seed_1" / MODEL_FILE, variant / "seed_1" / CHECKPOINT)
    capsys.readouterr()
    run_grid(grid, arrays=mnist, verbose=0)
    output = capsys.readouterr().out
    (choice,) = read_json(tmp_path / "runs" / "auto" / CHOICES_FILE).values()
    assert set(choice["run_steps_per_s"]) <= {"1", "2", "4"} and choice["size"] in (1, 2, 4)
    assert f"groups of {choice['size']} for the 4 runs" in output
    assert "fnn_zero_normal_x1/seed_1: resuming after epoch 1 of 2" in output
    others = [tmp_path / "runs" / "auto" / "fnn_lecun" / f"seed_{s}" for s in (0, 1)] + [
        variant / "seed_0"]
    size = choice["size"]
    for index, workdir in enumerate(others):
        summary = read_json(workdir / "summary.json")
        assert summary["status"] == "finished"
        # The other three in groups of `size` in grid order; size 1: alone.
        group = min(size, len(others) - index // size * size) if size > 1 else None
        assert summary.get("parallel_runs") == group, workdir
    resumed = read_csv(variant / "seed_1" / "metrics.csv")
    assert [row["epoch"] for row in resumed] == ["1", "2"]
    assert read_json(variant / "seed_1" / "summary.json")["resumed_from_epoch"] == 1
