"""End to end: the runner on the real datasets, through its flagfiles."""

import glob
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from kzero import run
from kzero.config import RunConfig
from kzero.io import read_csv, read_json
from kzero.quiet import has_tensorflow
from kzero.records import METRICS_COLUMNS
from kzero.analysis.paper import PAPER
from kzero.train import train

from conftest import REPO

FLAGFILES = sorted(glob.glob(os.path.join(REPO, "flags", "*.flags")))
# A run's config.json: its settings, and its provenance in a block of its own.
CONFIG_KEYS = {"dataset", "model", "scheme", "bias_scale", "activation", "seed", "epochs",
               "batch_size", "learning_rate", "data_dir", "provenance"}
PROVENANCE_KEYS = {"backend", "versions", "runs", "sweep", "experiment", "input_pipeline",
                   "command", "host", "accelerator", "processor", "init_stream",
                   "parallel_group"}


def run_cli(*argv):
    """Runs `python -m kzero.run ARGV` in this process (one jit cache, no
    interpreter start-up per run)."""
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["kzero.run", *argv])
        run.main(["kzero.run"])


def run_dirs(root):
    return sorted(os.path.dirname(p) for p in glob.glob(f"{root}/*/seed_*/config.json"))


def flagfile(name):
    return f"--flagfile={os.path.join(REPO, 'flags', name + '.flags')}"


# The studies beyond the paper (kzero.analysis.beyond), with the runs each flagfile's grid has.
BEYOND = {"beyond_bias_scale": 6 * 5, "beyond_depth": 5 * 3 * 5,
          **{f"beyond_gap_{study}_{dataset}": runs * 5
             for study, runs in (("epochs", 2), ("lr", 2 * 4), ("kernel", 4))
             for dataset in ("mnist", "cifar")}}


# The first-steps census (kzero.analysis.first_steps): runs per grid, and the steps each records.
CENSUS = {"census_cnn": (4 * 3, 30), "census_cnn_backends": (3, 30),
          "census_cnn_epsilon": (3, 30), "census_cnn_exact": (3, 30),
          "census_resnet20": (4 * 3, 20),
          "census_resnet50": (4, 10)}

# The residual grids this CPU trains to the end (docs/results): variants x 3 seeds.
RESIDUAL = {"cifar_resnet20": 5 * 3, "cifar_resnet20_paper_code": 3, "family_resnet20": 2 * 3}

# The family's members that change the architecture, on ResNet-50, for a GPU.
FAMILY_GPU = {"family_resnet50": 2 * 5}

# The zero-init family on the FNN (5 schemes x 5 seeds) and the CIFAR CNN (6 x 3).
FAMILY = {"family_mnist_fnn": 5 * 5, "family_cifar_cnn": 6 * 3}


def test_there_is_one_flagfile_per_paper_experiment():
    names = {os.path.basename(p)[:-len(".flags")] for p in FLAGFILES}
    assert names == {"mnist_logreg", "mnist_fnn", "mnist_fnn_scaled", "mnist_cnn",
                     "mnist_cnn_scaled", "mnist_cnn_precision", "mnist_zero", "cifar_logreg", "cifar_fnn",
                     "cifar_cnn", "cifar_zero", "cifar_resnet50", "cifar_resnet50_paper_code",
                     *BEYOND, *CENSUS, *RESIDUAL, *FAMILY, *FAMILY_GPU}
    for path in FLAGFILES:
        text = open(path).read()
        assert "--batch_size=128" in text
        assert "--runs=5" in text or os.path.basename(path)[:-len(".flags")] in {
            *CENSUS, *RESIDUAL, "family_cifar_cnn"}
        assert "--learning_rate=" in text
    # The report's "Not run" section sends each missing experiment to flags/<experiment>.flags.
    for experiment in {e for e, _ in PAPER}:
        text = open(os.path.join(REPO, "flags", experiment + ".flags")).read()
        assert f"--experiment={experiment}\n" in text


@pytest.mark.once
def test_the_census_flagfiles_make_their_grids_with_every_step_recorded():
    from kzero.grid import expand

    for name, (runs, steps) in CENSUS.items():
        with flagsaver.flagsaver():
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["kzero.run", flagfile(name)])
            grid = run.config_from_flags()
        assert len(expand(grid)) == runs, name
        base = grid.base
        assert base.max_steps == base.grad_first_steps == steps and base.epochs == 1, name
        assert grid.experiment_name.startswith("census_")


# The variants of each of the paper's flagfiles: 3 schemes unless named here.
PAPER_VARIANTS = {"mnist_fnn_scaled": 3, "mnist_cnn_scaled": 3, "mnist_zero": 2, "cifar_zero": 2,
                  "mnist_logreg": 1, "cifar_logreg": 1, "mnist_cnn_precision": 2,
                  "cifar_resnet50_paper_code": 2}


def test_every_flagfile_makes_a_runnable_grid_of_its_runs(tmp_path):
    from kzero.grid import check_runnable, expand

    for path in FLAGFILES:
        name = os.path.basename(path)[:-len(".flags")]
        with flagsaver.flagsaver():
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["kzero.run", flagfile(name), f"--output_dir={tmp_path}"])
            grid = run.config_from_flags()
        check_runnable(grid)
        runs = expand(grid)
        expected = (BEYOND.get(name) or CENSUS.get(name, (None,))[0] or RESIDUAL.get(name)
                    or FAMILY.get(name) or FAMILY_GPU.get(name)
                    or PAPER_VARIANTS.get(name, 3) * 5)
        assert len(runs) == expected, name
        # Each run's config is whole: its JSON reads back into the same JSON.
        for config in runs:
            text = json.dumps(config.to_dict())
            assert json.dumps(RunConfig.from_dict(json.loads(text)).to_dict()) == text, name


# The census flagfiles' grids are checked above and their runs in
# test_initcheck.py. Every flagfile's grid is expanded under each backend
# (test_every_flagfile_makes_a_runnable_grid_of_its_runs); training each of them
# is slow and backend-independent beyond what the per-backend tests train.
@pytest.mark.slow
@pytest.mark.once
@pytest.mark.parametrize("name", [os.path.basename(p)[:-6] for p in FLAGFILES
                                  if "resnet" not in p and "beyond" not in p
                                  and not os.path.basename(p).startswith(("census_", "family_"))])
def test_every_flagfile_runs_one_epoch_on_a_subset(name, tmp_path, data_dir):
    # The first variant of each grid (shard 0 of as many shards as variants):
    # every variant's config is checked above without training, and each
    # model family trains under every backend in the fast tier.
    variants = PAPER_VARIANTS.get(name, 3)
    run_cli(flagfile(name), "--epochs=1", "--runs=1", "--max_examples=256",
            f"--shard=0/{variants}", f"--data_dir={data_dir}", f"--output_dir={tmp_path}")
    # The precision study writes into Figure 5's experiment.
    (workdir,) = run_dirs(tmp_path / {"mnist_cnn_precision": "mnist_cnn"}.get(name, name))
    check_run_dir(workdir, epochs=1)


@pytest.mark.slow
@pytest.mark.once
def test_the_beyond_flagfiles_make_their_grids_and_the_deepest_mlp_trains(tmp_path, data_dir):
    from kzero.grid import expand

    for name, runs in BEYOND.items():
        with flagsaver.flagsaver():
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["kzero.run", flagfile(name)])
            grid = run.config_from_flags()
        assert len(expand(grid)) == runs and grid.experiment_name == name, name
    run_cli(flagfile("beyond_depth"), "--depth=2,32", "--scheme=zero_normal", "--epochs=1",
            "--runs=1", "--max_examples=256", f"--data_dir={data_dir}",
            f"--output_dir={tmp_path}")
    dirs = run_dirs(tmp_path / "beyond_depth")
    assert [os.path.basename(os.path.dirname(d)) for d in dirs] == [
        "mlp2x256_zero_normal_x1", "mlp32x256_zero_normal_x1"]
    for workdir in dirs:
        check_run_dir(workdir, epochs=1)


def check_run_dir(workdir, epochs, backend=None):
    config = read_json(os.path.join(workdir, "config.json"))
    provenance = config["provenance"]
    assert CONFIG_KEYS <= set(config) and PROVENANCE_KEYS <= set(provenance)
    assert provenance["backend"] == (backend or keras.backend.backend())
    assert provenance["versions"]["keras"] == keras.__version__
    if os.path.exists("/proc/cpuinfo"):  # Linux names its CPU model there
        assert provenance["processor"], "the run did not record its CPU model"
    assert isinstance(config["model"], str) and isinstance(config["scheme"], str)
    assert workdir.endswith(f"seed_{config['seed']}")
    rows = read_csv(os.path.join(workdir, "metrics.csv"))
    assert list(rows[0]) == METRICS_COLUMNS
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    for row in rows:
        assert 0.0 <= float(row["test_accuracy"]) <= 1.0 and float(row["seconds"]) > 0
    summary = read_json(os.path.join(workdir, "summary.json"))
    assert summary["status"] == "finished" and summary["epochs_completed"] == epochs
    assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
    # config.json is the RunConfig's serialization and reads back into it.
    reread = RunConfig.read(os.path.join(workdir, "config.json"))
    assert json.loads(json.dumps(reread.to_dict())) == config
    return config, rows


# ResNet-50 takes minutes to compile under jax; the residual family trains under
# every backend in the fast tier below (resnet20), and ResNet-50's init check
# runs under every backend in test_initcheck.py.
@pytest.mark.slow
@pytest.mark.once
def test_resnet50_flagfile_trains_steps(tmp_path, data_dir):
    run_cli(flagfile("cifar_resnet50"), "--epochs=1", "--runs=1", "--scheme=lecun",
            "--max_examples=32", "--batch_size=16", f"--data_dir={data_dir}",
            f"--output_dir={tmp_path}")
    (workdir,) = run_dirs(tmp_path / "cifar_resnet50")
    config, rows = check_run_dir(workdir, epochs=1)
    assert config["model"] == "resnet50" and config["epochs"] == 1
    assert np.isfinite(float(rows[0]["loss"]))


# One trained run of each model family, on a few hundred examples, under each
# backend: the fast tier's end-to-end check of the runner, models and records.
FAMILIES = [("mnist", "logreg"), ("mnist", "fnn"), ("mnist", "mlp"), ("mnist", "cnn"),
            ("cifar10", "resnet20")]


@pytest.mark.parametrize("dataset,model", FAMILIES)
def test_each_model_family_learns_from_a_few_hundred_examples(tmp_path, data_dir, dataset,
                                                               model):
    run_cli("--experiment=family", f"--dataset={dataset}", f"--model={model}",
            "--scheme=zero_normal", "--epochs=2", "--runs=1", "--max_examples=320",
            "--batch_size=32", "--parallel_runs=1", "--nosave_model",
            f"--data_dir={data_dir}", f"--output_dir={tmp_path}")
    (workdir,) = run_dirs(tmp_path / "family")
    config, rows = check_run_dir(workdir, epochs=2)
    assert (config["dataset"], config["model"], config["scheme"]) == (dataset, model,
                                                                     "zero_normal")
    losses = [float(row["loss"]) for row in rows]
    assert np.isfinite(losses).all() and losses[1] < losses[0], losses
    # Zero kernels wake from the output back: the logits' at the first step.
    summary = read_json(os.path.join(workdir, "summary.json"))
    assert summary["awakening_step"]["logits"] == 1
    erased = bool(summary["init_check"]["erased_symmetry_breaking"])
    # Of these, only the ResNet puts a batch norm after a biased conv (the
    # MNIST CNN has none).
    assert erased == (model == "resnet20"), summary["init_check"]


def fnn_config(init, **overrides):
    config = dict(dataset="mnist", model="fnn", scheme=init, bias_scale=1.0, activation="elu",
                  seed=0, epochs=1, batch_size=128, learning_rate=1e-3)
    config.update(overrides)
    return config


@pytest.mark.slow
def test_one_epoch_mnist_fnn_matches_the_paper(tmp_path, mnist):
    # Paper, Figure 3, epoch 1: about 0.93 (reference) and 0.92 (zero + N(0,1) bias).
    _, lecun = train(fnn_config("lecun", bias_scale=None), str(tmp_path / "lecun"), mnist)
    _, zero_normal = train(fnn_config("zero_normal"), str(tmp_path / "zn"), mnist)
    assert lecun["final_test_accuracy"] >= 0.92
    assert zero_normal["final_test_accuracy"] >= 0.89


@pytest.mark.slow
def test_a_finished_run_keeps_a_model_that_gives_its_final_test_accuracy(tmp_path, mnist):
    config = fnn_config("lecun", bias_scale=None, epochs=2, max_examples=1024,
                        record_gradients=False)
    _, summary = train(config, str(tmp_path / "kept"), mnist)
    assert not (tmp_path / "kept" / "checkpoint.keras").exists()
    model = keras.saving.load_model(tmp_path / "kept" / "model.keras")
    images = mnist["x_test"][:1024, :, :, None].astype("float32") / 255.0
    predictions = np.argmax(keras.ops.convert_to_numpy(model.predict(images, verbose=0)), -1)
    accuracy = np.mean(predictions == mnist["y_test"][:1024])
    assert accuracy == pytest.approx(summary["final_test_accuracy"], abs=1e-6)
    train({**config, "save_model": False}, str(tmp_path / "not_kept"), mnist)
    assert not glob.glob(str(tmp_path / "not_kept" / "*.keras"))


LOAD_IN_A_FRESH_PROCESS = """
import sys
import keras
if sys.argv[2] == "import kzero":
    import kzero
model = keras.saving.load_model(sys.argv[1])
print(type(model.get_layer("dense1").bias_initializer).__name__)
"""


@pytest.mark.slow
@pytest.mark.once
@pytest.mark.parametrize("init,preamble,initializer", [
    ("lecun", "import kzero", "FanInUniform"),
    ("zero_normal", "import kzero", "NumpyNormal"),
    # Keras' own initializers only: the file loads where kzero is not imported.
    ("zero", "", "Zeros"),
])
def test_a_runs_model_loads_in_a_fresh_process(tmp_path, mnist, init, preamble, initializer):
    bias_scale = 1.0 if init == "zero_normal" else None
    train(fnn_config(init, bias_scale=bias_scale, max_examples=512, record_gradients=False,
                     record_symmetry=False), str(tmp_path), mnist, verbose=0)
    result = subprocess.run([sys.executable, "-c", LOAD_IN_A_FRESH_PROCESS,
                             str(tmp_path / "model.keras"), preamble],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [initializer]


@pytest.mark.slow
def test_pure_zero_fnn_is_stuck_at_the_class_prior(tmp_path, mnist):
    model, summary = train(fnn_config("zero", bias_scale=None), str(tmp_path), mnist)
    # ELU(0) = 0 in every hidden unit: only the output bias learns, so the model
    # always predicts the most frequent class, "1", which is 1135 of 10000.
    assert summary["final_test_accuracy"] == pytest.approx(0.1135, abs=1e-9)
    for layer in ("dense1", "logits"):
        assert not keras.ops.convert_to_numpy(model.get_layer(layer).kernel).any()
    assert not keras.ops.convert_to_numpy(model.get_layer("dense1").bias).any()
    assert keras.ops.convert_to_numpy(model.get_layer("logits").bias).argmax() == 1


def test_tensorboard_scalars_read_back_with_tensorboards_reader(tmp_path, mnist):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(fnn_config("lecun", bias_scale=None, epochs=2, max_examples=512), str(tmp_path), mnist)
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    events = accumulator.Scalars("epoch/test_accuracy")
    rows = read_csv(tmp_path / "metrics.csv")
    assert [e.step for e in events] == [1, 2]
    np.testing.assert_allclose([e.value for e in events],
                               [float(r["test_accuracy"]) for r in rows], rtol=1e-6)


@pytest.mark.slow
def test_flags_after_the_flagfile_override_it_and_finished_runs_are_skipped(
        tmp_path, data_dir, capsys):
    argv = [flagfile("mnist_fnn"), "--epochs=2", "--runs=2", "--scheme=zero_uniform",
            "--bias_scales=0.5", "--max_examples=256", "--seed=7",
            f"--data_dir={data_dir}", f"--output_dir={tmp_path}"]
    run_cli(*argv)
    dirs = run_dirs(tmp_path / "mnist_fnn")
    assert [os.path.relpath(d, tmp_path) for d in dirs] == [
        "mnist_fnn/fnn_zero_uniform_x0.5/seed_7", "mnist_fnn/fnn_zero_uniform_x0.5/seed_8"]
    config, _ = check_run_dir(dirs[0], epochs=2)
    assert (config["scheme"], config["bias_scale"], config["epochs"]) == ("zero_uniform", 0.5, 2)
    before = os.path.getmtime(os.path.join(dirs[0], "metrics.csv"))
    capsys.readouterr()
    run_cli(*argv)
    assert capsys.readouterr().out.count("skipped") == 2
    assert os.path.getmtime(os.path.join(dirs[0], "metrics.csv")) == before
    run_cli(*argv, "--overwrite", "--runs=1")
    assert os.path.getmtime(os.path.join(dirs[0], "metrics.csv")) > before


@pytest.mark.once
@pytest.mark.parametrize("argv,message", [
    (["--dataset=svhn"], "--dataset=svhn: not valid; choose from mnist, cifar10"),
    (["--model=fnn,vgg"], "--model=vgg: not valid; choose from logreg, fnn, cnn, resnet50"),
    (["--model=resnet50"], "--model=resnet50: not defined for the dataset mnist; it needs 3-ch"),
    (["--optimizer=rmsprop"], "--optimizer=rmsprop: not valid; choose from adam, sgd, momentum"),
    (["--weight_decay=-1"], "--weight_decay=-1: must be 0 or more"),
    (["--seed=-1"], "--seed=-1: must be 0 or more"),
    (["--learning_rate=0"], "--learning_rate=0: must be a positive number"),
    (["--inits=xavier"], "--inits=xavier: not valid; choose from lecun, zero, zero_normal"),
    (["--scheme=xavier"], "--scheme=xavier: not valid; choose from lecun, zero, zero_normal"),
    (["--init=lecun,xavier"], "--init=xavier: not valid; choose from lecun, zero, zero_normal"),
    (["--activation=gelu"], "--activation=gelu: not valid; choose from elu"),
    (["--bias_scales=1,0"], "--bias_scales=0: must be a positive number"),
    (["--depth=4,8"], "--depth=4,8: none of the models takes a depth; only mlp do"),
    (["--model=mlp", "--depth=4,0"], "--depth=0: must be whole numbers of at least 1"),
    (["--model=mlp", "--width=0"], "--width=0: must be at least 1"),
    (["--learning_rates=1e-3,-1"], "--learning_rates=-1: must be a positive number"),
    (["--epochs=0"], "--epochs=0: must be at least 1"),
    (["--runs=-1"], "--runs=-1: must be at least 1"),
    (["--batch_size=0"], "--batch_size=0: must be at least 1"),
    (["--data_dir=/nonexistent"], "--data_dir=/nonexistent: no such directory"),
    (["--output_dir=/proc/kzero"], "--output_dir=/proc/kzero: not a writable directory"),
    (["--epochs=abc"], "--epochs=abc: invalid literal for int()"),
    (["--precision=float64"], "--precision=float64: not valid; choose from float32, mixed_bf"),
    (["--precisions=float32,fp8"], "--precisions=fp8: not valid; choose from float32, mixed_bf"),
    (["--jit_compile=yes"], "--jit_compile=yes: not valid; choose from auto, true, false"),
    (["--pipeline=gpu"], "--pipeline=gpu: not valid; choose from auto, tf, numpy, device"),
    (["--sead=1"], "Unknown command line flag 'sead'"),
    (["--shard=2/2"], "--shard=2/2: must be i/n with 0 <= i < n"),
    (["--parallel_runs=0"], "--parallel_runs=0: must be at least 1, or auto"),
    (["--parallel_runs=some"],
     "--parallel_runs=some: must be a whole number of at least 1, or auto"),
    (["--parallel_runs=2", "--distribution=data_parallel"], "--parallel_runs=2: not with"),
    (["--shard=first"], "--shard=first: must be i/n with 0 <= i < n"),
    (["--distribution=model_parallel"], "--distribution=model_parallel: not valid; choose from"),
    (["--max_steps=5", "--epochs=3"], "--max_steps=5: trains part of one epoch; use --epochs=1"),
    (["--bn_epsilon=0"], "--bn_epsilon=0: must be a positive number"),
    (["--model="], "--model=: is empty; choose from logreg, fnn, cnn"),
    (["--inits="], "--inits=: is empty; choose from lecun, zero"),
    (["--learning_rate="], "--learning_rate=: is empty; give one or more positive numbers"),
    (["--inits=zero_normal_bm"], "--inits=zero_normal_bm: not valid; choose from lecun, zero, "
                                 "zero_normal, zero_normal_bn"),
])
def test_bad_flags_fail_in_one_line_with_exit_code_2(tmp_path, capsys, argv, message):
    output_dir = [] if any(a.startswith("--output_dir") for a in argv) else [
        f"--output_dir={tmp_path / 'out'}"]
    code, out, err = run_cli_exit(capsys, *argv, *output_dir)
    assert code == 2
    # One line of kzero's, naming the flag; nothing on stdout (nothing ran).
    assert err.splitlines() == [err.strip()] and err.startswith("kzero: error: ") \
        and message in err, err
    assert out == ""
    assert not (tmp_path / "out").exists()


def run_cli_exit(capsys, *argv):
    """`python -m kzero.run ARGV` in this process, through the runner's own flag
    parser: (exit code, stdout, stderr). An exception other than the runner's
    exit propagates and fails the test, as a traceback would in a shell."""
    capsys.readouterr()
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        try:
            run._parse_flags(["kzero.run", *argv])
            run.main(["kzero.run"])
            code = 0
        except SystemExit as e:
            code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.once
@pytest.mark.parametrize("argv,message", [
    (["--sead=1"], "Unknown command line flag 'sead'"),
    pytest.param(["--epochs=0"], "--epochs=0: must be at least 1", marks=pytest.mark.slow),
])
def test_a_bad_flag_in_a_shell_is_one_line_and_exit_code_2(tmp_path, argv, message):
    # The in-process cases above, through the interpreter and absl's app.run,
    # once for a parser error and once for a setting's.
    result = subprocess.run([sys.executable, "-m", "kzero.run", *argv,
                             f"--output_dir={tmp_path / 'out'}"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if "kzero" in line or "rror" in line]
    assert line.startswith("kzero: error: ") and message in line, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.once
def test_missing_dataset_file_fails_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kzero.run", f"--data_dir={tmp_path}",
         f"--output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"kzero: error: {tmp_path}/mnist.npz not found" in result.stderr
    assert not (tmp_path / "out").exists()


def test_help_and_docs_flags_md_show_every_flag_once_by_purpose():
    from kzero.config import flag_fields

    names = [f.name for f in flags.FLAGS.get_flags_for_module(run)
             if f.name not in run.ALIASES]
    fields = [field.name for group in flag_fields().values() for _, field in group]
    assert sorted(fields) == sorted(names) and len(names) >= 40
    # In a fresh interpreter: extensions that other tests import register names
    # that the flags' help would list.
    generated = subprocess.run([sys.executable, "scripts/flags_doc.py"], capture_output=True,
                               text=True, cwd=REPO, timeout=300)
    assert generated.returncode == 0, generated.stderr[-2000:]
    with open(os.path.join(REPO, "docs", "flags.md")) as f:
        assert f.read() == generated.stdout, \
            "docs/flags.md is stale: python scripts/flags_doc.py > docs/flags.md"
    # No empty default shows as '' (--depth); an older spelling is named beside its flag.
    help_text = run.flags_help()
    assert "--depth=none" in help_text and "''" not in help_text
    assert "--scheme=lecun,zero_normal,zero_uniform (also --init, --inits)" in help_text


def grid_of(*argv):
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["kzero.run", *argv])
        return run.config_from_flags()


def test_the_older_flag_spellings_make_the_same_grid():
    from kzero.config import AXES
    from kzero.grid import expand

    older = grid_of("--inits=lecun,zero_normal", "--bias_scales=0.5,2",
                    "--learning_rates=3e-4,1e-3", "--precisions=float32,mixed_bfloat16",
                    "--runs=2")
    newer = grid_of("--scheme=lecun,zero_normal", "--bias_scale=0.5,2",
                    "--learning_rate=3e-4,1e-3", "--precision=float32,mixed_bfloat16",
                    "--runs=2")
    singular = grid_of("--init=lecun,zero_normal", "--bias_scale=0.5,2",
                       "--learning_rate=3e-4,1e-3", "--precision=float32,mixed_bfloat16",
                       "--runs=2")
    assert older.axes == newer.axes == singular.axes == {
        "model": ("fnn",), "scheme": ("lecun", "zero_normal"), "bias_scale": (0.5, 2.0),
        "learning_rate": (3e-4, 1e-3), "precision": ("float32", "mixed_bfloat16")}
    assert [(r.variant, r.seed) for r in expand(older)] == [
        (r.variant, r.seed) for r in expand(newer)]
    assert len(expand(newer)) == (1 + 2) * 2 * 2 * 2
    # A setting's flag default is its field's: the flags hold no defaults of their own.
    def shared(config):
        return {name: value for name, value in config.settings().items() if name not in AXES}

    assert shared(grid_of().base) == shared(RunConfig())
    assert grid_of().axes == {"model": ("fnn",), "scheme": ("lecun", "zero_normal",
                                                          "zero_uniform"),
                              "bias_scale": (1.0,), "learning_rate": (1e-3,),
                              "precision": ("float32",)}


BLOCK_TENSORFLOW = '''
from importlib.machinery import PathFinder

_find_spec = PathFinder.find_spec


def _find_spec_without_tensorflow(name, path=None, target=None):
    """Behaves as if TensorFlow and tensorflow-datasets were not installed."""
    if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
        return None
    return _find_spec(name, path, target)


PathFinder.find_spec = staticmethod(_find_spec_without_tensorflow)
'''


# CI installs kzero a second time without TensorFlow and runs the fast tier there
# under jax and torch (.ci/run), where the test after this one checks the same for
# real; it tells the README's test command so, and this simulation steps aside.
REAL_TENSORFLOW_FREE_PASS = "KZERO_TESTS_TENSORFLOW_FREE_PASS_FOLLOWS"


@pytest.mark.slow
@pytest.mark.once
@pytest.mark.skipif(os.environ.get(REAL_TENSORFLOW_FREE_PASS) == "1",
                    reason="a TensorFlow-free install runs test_a_tensorflow_free_install_trains "
                    "after this pass")
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_runs_without_tensorflow(tmp_path, data_dir, backend):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TENSORFLOW)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), KERAS_BACKEND=backend)
    result = subprocess.run(
        [sys.executable, "-m", "kzero.run", "--dataset=cifar10", "--model=cnn",
         "--scheme=zero_normal", "--epochs=2", "--runs=1", "--max_examples=256",
         f"--data_dir={data_dir}", f"--output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    (workdir,) = run_dirs(tmp_path / "out" / "cifar10_cnn")
    config, _ = check_run_dir(workdir, epochs=2, backend=backend)
    assert config["pipeline"] == "auto" and config["provenance"]["input_pipeline"] == "numpy"
    assert "tensorflow" not in config["provenance"]["versions"]
    assert "kzero" in config["provenance"]["versions"]
    rows = read_csv(os.path.join(workdir, "gradients.csv"))
    assert {r["layer"] for r in rows} >= {"conv1", "bn1", "logits"}
    blocked = subprocess.run([sys.executable, "-m", "kzero.run", "--pipeline=tf"],
                             capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert blocked.returncode == 2
    assert "--pipeline=tf: TensorFlow is not installed" in blocked.stderr


@pytest.mark.skipif(has_tensorflow(), reason="checks an install without TensorFlow")
def test_a_tensorflow_free_install_trains(tmp_path, data_dir, capsys):
    """test_runs_without_tensorflow's assertions, where TensorFlow is really absent."""
    run_cli("--dataset=cifar10", "--model=cnn", "--scheme=zero_normal", "--epochs=2", "--runs=1",
            "--max_examples=64", "--batch_size=32", "--norecord_symmetry",
            "--norecord_activations", f"--data_dir={data_dir}",
            f"--output_dir={tmp_path / 'out'}")
    (workdir,) = run_dirs(tmp_path / "out" / "cifar10_cnn")
    config, _ = check_run_dir(workdir, epochs=2)
    assert config["pipeline"] == "auto" and config["provenance"]["input_pipeline"] == "numpy"
    assert "tensorflow" not in config["provenance"]["versions"]
    assert "kzero" in config["provenance"]["versions"]
    rows = read_csv(os.path.join(workdir, "gradients.csv"))
    assert {r["layer"] for r in rows} >= {"conv1", "bn1", "logits"}
    code, _, err = run_cli_exit(capsys, "--pipeline=tf")
    assert code == 2 and "--pipeline=tf: TensorFlow is not installed" in err


@pytest.mark.slow
@pytest.mark.once
def test_shards_cover_the_grid_once_and_the_report_merges_them(tmp_path, data_dir):
    from kzero.analysis.report import report

    common = ["--dataset=mnist", "--model=logreg", "--scheme=lecun,zero", "--runs=3",
              "--epochs=1", "--max_examples=512", f"--data_dir={data_dir}"]
    shards = [tmp_path / f"shard_{i}" for i in range(2)]
    for i, out in enumerate(shards):
        run_cli(*common, f"--shard={i}/2", f"--output_dir={out}")
    trained = [{os.path.relpath(d, out / "mnist_logreg") for d in run_dirs(out / "mnist_logreg")}
               for out in shards]
    assert trained[0].isdisjoint(trained[1])
    assert trained[0] | trained[1] == {f"{variant}/seed_{seed}" for variant in
                                       ("logreg_lecun", "logreg_zero") for seed in range(3)}
    assert {len(t) for t in trained} == {3}  # every 2nd run of 6: an even split
    stats = report([str(out) for out in shards], str(tmp_path / "report"))
    for variant in ("logreg_lecun", "logreg_zero"):
        assert stats[("mnist_logreg", variant)]["rows"][-1]["n"] == 3


@pytest.mark.slow
@pytest.mark.once
def test_distribution_needs_the_jax_backend_and_a_batch_that_splits_evenly(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="torch")
    result = subprocess.run([sys.executable, "-m", "kzero.run", "--distribution=data_parallel",
                             f"--output_dir={tmp_path}"],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--distribution=data_parallel: needs KERAS_BACKEND=jax" in result.stderr
    env = dict(os.environ, KERAS_BACKEND="jax",
               XLA_FLAGS="--xla_force_host_platform_device_count=3")
    result = subprocess.run([sys.executable, "-m", "kzero.run", "--distribution=data_parallel",
                             f"--output_dir={tmp_path}"],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--batch_size=128: must divide evenly over the 3 devices" in result.stderr


TWO_DEVICE_RUN = """
import json, sys
import jax, keras
from kzero.datasets import load_dataset
from kzero.train import train
config = json.loads(sys.argv[1])
model, summary = train(config, sys.argv[2], load_dataset("mnist", sys.argv[3]), verbose=0)
kernel = model.get_layer("dense1").kernel.value
print(json.dumps({"devices": jax.device_count(),
                  "kernel_devices": len(kernel.sharding.device_set)}))
"""


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="DataParallel is a jax feature")
def test_data_parallel_on_two_devices_matches_one_device(tmp_path, data_dir, mnist):
    # A whole MNIST epoch (469 steps), the shape at which Keras' threaded
    # batch-end dispatch made XLA abort the process (kzero.callbacks.SynchronousBatchEnd).
    config = dict(dataset="mnist", model="fnn", scheme="zero_normal", bias_scale=1.0,
                  activation="elu", seed=3, epochs=1, batch_size=128, learning_rate=1e-3)
    train(config, str(tmp_path / "one"), mnist, verbose=0)
    env = dict(os.environ, KERAS_BACKEND="jax",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = subprocess.run(
        [sys.executable, "-c", TWO_DEVICE_RUN,
         json.dumps({**config, "distribution": "data_parallel"}), str(tmp_path / "two"),
         data_dir], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    placement = json.loads(result.stdout.strip().splitlines()[-1])
    assert placement == {"devices": 2, "kernel_devices": 2}
    one, two = (read_csv(tmp_path / name / "metrics.csv") for name in ("one", "two"))
    for column in ("loss", "accuracy", "test_loss", "test_accuracy"):
        np.testing.assert_allclose([float(r[column]) for r in two],
                                   [float(r[column]) for r in one], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_mixed_bfloat16_computes_in_16_bits_and_still_learns(tmp_path, mnist):
    config = dict(dataset="mnist", model="fnn", scheme="lecun", bias_scale=None, activation="elu",
                  seed=0, epochs=1, batch_size=128, learning_rate=1e-3, max_examples=2048,
                  precision="mixed_bfloat16")
    model, summary = train(config, str(tmp_path), mnist, verbose=0)
    dense = model.get_layer("dense1")
    assert dense.compute_dtype == "bfloat16" and dense.kernel.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert summary["status"] == "finished" and summary["final_test_accuracy"] > 0.6


@pytest.mark.slow
def test_jit_compile_either_way_trains_to_the_same_metrics(tmp_path, mnist):
    # The setting that "auto" does not pick here: eager under jax, XLA under
    # tensorflow on a CPU, torch.compile under torch.
    config = dict(dataset="mnist", model="fnn", scheme="zero_normal", bias_scale=1.0,
                  activation="elu", seed=3, epochs=2, batch_size=128, learning_rate=1e-3,
                  max_examples=1024, record_gradients=False, record_symmetry=False)
    auto_model, _ = train(config, str(tmp_path / "auto"), mnist, verbose=0)
    other = "false" if auto_model.jit_compile else "true"
    other_model, _ = train({**config, "jit_compile": other}, str(tmp_path / other), mnist,
                           verbose=0)
    assert other_model.jit_compile == (other == "true")
    rows = [read_csv(tmp_path / name / "metrics.csv") for name in ("auto", other)]
    for column in ("loss", "accuracy", "test_loss", "test_accuracy"):
        np.testing.assert_allclose([float(r[column]) for r in rows[1]],
                                   [float(r[column]) for r in rows[0]], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_parallel_runs_equal_separate_runs(tmp_path, data_dir, capsys):
    # 2,000 examples end in a partial batch of 80, as MNIST and CIFAR-10 do:
    # Keras' per-output losses under tensorflow weigh it like a whole batch.
    common = ["--dataset=mnist", "--model=fnn", "--scheme=lecun,zero_normal", "--runs=2",
              "--epochs=2", "--max_examples=2000", f"--data_dir={data_dir}"]
    run_cli(*common, f"--output_dir={tmp_path / 'alone'}")
    # The device pipeline's batches are the numpy pipeline's: the results stay equal.
    # Groups span the grid's variants: lecun's two seeds and zero_normal's first train
    # as one model.
    capsys.readouterr()
    run_cli(*common, "--parallel_runs=3", "--pipeline=device",
            f"--output_dir={tmp_path / 'together'}")
    output = capsys.readouterr().out
    first = ["fnn_lecun/seed_0", "fnn_lecun/seed_1", "fnn_zero_normal_x1/seed_0"]
    # A group's console line per epoch: per variant, its runs' test accuracy,
    # read back from their metrics.csv, in place of Keras' line of every
    # replica's metrics.
    finals = [float(read_csv(tmp_path / "together" / "mnist_fnn" / run_dir / "metrics.csv")[0][
        "test_accuracy"]) for run_dir in first]
    lecun = finals[:2]
    assert re.search(rf"^epoch 1/2 - \d+s - fnn_lecun: test accuracy {min(lecun):.4f} to "
                     rf"{max(lecun):.4f}, mean {sum(lecun) / 2:.4f}, over 2 runs; "
                     rf"fnn_zero_normal_x1: test accuracy {finals[2]:.4f}$",
                     output, re.MULTILINE), output
    assert max(len(line) for line in output.splitlines()) < 200
    for run_dir, group in [(name, first) for name in first] + [
            ("fnn_zero_normal_x1/seed_1", ["fnn_zero_normal_x1/seed_1"])]:
        alone, together = (tmp_path / where / "mnist_fnn" / run_dir
                           for where in ("alone", "together"))
        rows = [read_csv(d / "metrics.csv") for d in (alone, together)]
        assert [r["epoch"] for r in rows[1]] == ["1", "2"]
        for column in ("loss", "accuracy", "test_loss", "test_accuracy"):
            np.testing.assert_allclose([float(r[column]) for r in rows[1]],
                                       [float(r[column]) for r in rows[0]], rtol=1e-5)
        # Each replica's diagnostics are the single run's.
        for name, key_columns in (("gradients.csv", ("step", "layer", "param")),
                                  ("activations.csv", ("step", "layer")),
                                  ("symmetry.csv", ("epoch", "layer"))):
            rows = [read_csv(d / name) for d in (alone, together)]
            assert [[r[k] for k in key_columns] for r in rows[1]] == [
                [r[k] for k in key_columns] for r in rows[0]], name
            for column in rows[0][0]:
                if column not in key_columns:
                    np.testing.assert_allclose(
                        [float(r[column]) for r in rows[1]], [float(r[column]) for r in rows[0]],
                        rtol=1e-5, atol=1e-9, err_msg=f"{name} {column}")
        config = read_json(together / "config.json")
        assert config["provenance"]["parallel_group"] == group
        assert config["provenance"]["input_pipeline"] == "device"
        summary = read_json(together / "summary.json")
        assert summary["status"] == "finished" and summary["parallel_runs"] == len(group)
        assert summary["awakening_step"] == read_json(alone / "summary.json")["awakening_step"] \
            == ({"dense1": 1, "logits": 1} if "lecun" in run_dir else {"dense1": 2, "logits": 1})
        assert len(glob.glob(str(together / "events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_a_group_honours_precision_optimizer_and_activation(tmp_path, data_dir):
    # Under tensorflow a group once trained in float32 whatever --precision said.
    common = ["--dataset=mnist", "--model=fnn", "--scheme=zero_normal", "--runs=2", "--epochs=1",
              "--max_examples=1024", "--norecord_gradients", "--norecord_symmetry",
              "--precision=mixed_bfloat16", "--optimizer=momentum", "--learning_rate=0.01",
              "--activation=tanh", f"--data_dir={data_dir}"]
    run_cli(*common, f"--output_dir={tmp_path / 'alone'}")
    run_cli(*common, "--parallel_runs=2", f"--output_dir={tmp_path / 'together'}")
    # The defaults go where the 16-bit runs went: their float32 twins are
    # runs of their own, not skipped as already finished.
    run_cli(*common[:8], "--parallel_runs=2", f"--data_dir={data_dir}",
            f"--output_dir={tmp_path / 'alone'}")
    for seed in (0, 1):
        alone, together, defaults = (
            tmp_path / where / "mnist_fnn" / variant / f"seed_{seed}"
            for where, variant in (("alone", "fnn_zero_normal_x1_mixed_bfloat16"),
                                   ("together", "fnn_zero_normal_x1_mixed_bfloat16"),
                                   ("alone", "fnn_zero_normal_x1")))
        rows = {d: read_csv(d / "metrics.csv") for d in (alone, together, defaults)}
        for column in ("loss", "accuracy", "test_loss", "test_accuracy"):
            np.testing.assert_allclose([float(r[column]) for r in rows[together]],
                                       [float(r[column]) for r in rows[alone]], rtol=1e-5)
        # The settings changed the training: the default group's loss differs,
        # by far more than the rtol within which groups equal separate runs.
        default_loss, loss = (float(rows[d][0]["loss"]) for d in (defaults, alone))
        assert abs(default_loss - loss) > 1e-4 * loss
        replica = keras.saving.load_model(together / "model.keras")
        dense1 = replica.get_layer("dense1")
        assert dense1.compute_dtype == "bfloat16" and dense1.activation is keras.activations.tanh
        config = read_json(together / "config.json")
        assert (config["optimizer"], config["precision"]) == ("momentum", "mixed_bfloat16")
