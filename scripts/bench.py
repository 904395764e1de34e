"""Benchmarks, one JSON line each; run on demand, never as timed tests.

    KERAS_BACKEND=jax python scripts/bench.py --dataset=mnist --model=fnn
    KERAS_BACKEND=jax python scripts/bench.py --against=no_recording

`--against=reference` (the default) times kzero's path (its input pipeline,
`model.fit` and its default callbacks, test evaluation after every epoch)
against a plain hand-written loop over the same model, data and optimizer in
the same framework and process: one jitted step with a hand-written Adam under
jax, a `tf.GradientTape` step with Keras' Adam under tensorflow,
`torch.optim.Adam` under torch. The reference also evaluates the test split
after every epoch, on arrays held in memory, and does not augment.

`pipeline_images_per_s` is what kzero's input pipeline delivers on its own (with
the ResNet's augmentation for `--model=resnet50`): the model must not outrun it.
`peak_device_memory_mb` is the accelerator's peak, null without one.

`--against=no_recording` times kzero with and without its diagnostics
(gradient and activation recording, the symmetry monitor): what recording costs.
`--against=no_activations` leaves out only the activation recording: what the
forward statistics cost.

`--against=keras_fit` times kzero against Keras' own `model.fit` on the same
compiled model, with the splits as in-memory arrays in kzero's order, no
callbacks and no diagnostics: what kzero adds to Keras (input pipeline,
callbacks, recording).
With `--against=reference` it splits kzero's gap to the plain loop into
kzero's part (kzero / keras_fit) and Keras' own (keras_fit / reference).

The first epoch (compilation) is reported apart from the steady ones. For the
steady epochs both the minimum and the median are given: on a small shared
machine epoch times jump between levels whatever the code, so the minimum is
the better estimate of the intrinsic cost and the median shows the spread.
Settings alternate over `--repeats` so that drift of a noisy machine hits both.
"""

import json
import os
import resource
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

flags.DEFINE_string("dataset", "mnist", "mnist or cifar10.")
flags.DEFINE_string("model", "fnn", "Model name.")
flags.DEFINE_string("scheme", "zero_normal", "Init scheme.")
flags.DEFINE_alias("init", "scheme")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Keras dtype policy of both loops.")
flags.DEFINE_enum("pipeline", "auto", ["auto", "tf", "numpy", "device"],
                  "kzero's input pipeline.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "kzero's jit_compile (the reference loops are fixed).")
flags.DEFINE_enum("against", "reference", ["reference", "no_recording", "no_activations",
                                          "keras_fit"], "What to compare with.")

# What kzero's own comparisons turn off.
WITHOUT = {"no_recording": dict(record_gradients=False, record_symmetry=False,
                                record_activations=False),
           "no_activations": dict(record_activations=False)}
flags.DEFINE_integer("epochs", 4, "Epochs per measurement; the first is not counted.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("max_examples", None, "First N examples of each split.")
flags.DEFINE_integer("repeats", 2, "Alternating measurements of each setting.")
flags.DEFINE_string("data_dir", None, "Directory holding the npz files.")
FLAGS = flags.FLAGS

LEARNING_RATE = 1e-3


def bench_config(**extra):
    """The RunConfig that kzero's side of the benchmark trains."""
    from kzero.config import RunConfig

    settings = dict(dataset=FLAGS.dataset, model=FLAGS.model, scheme=FLAGS.scheme, bias_scale=1.0,
                    activation="elu", seed=0, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
                    learning_rate=LEARNING_RATE, max_examples=FLAGS.max_examples,
                    precision=FLAGS.precision, pipeline=FLAGS.pipeline,
                    jit_compile=FLAGS.jit_compile, save_model=False)
    return RunConfig(**{**settings, **extra})


def kzero_epoch_times(arrays, workdir, **extra):
    from kzero.io import read_csv
    from kzero.train import train

    _, summary = train(bench_config(**extra), workdir, arrays, verbose=0)
    rows = read_csv(os.path.join(workdir, "metrics.csv"))
    return [float(row["seconds"]) for row in rows], summary["final_test_accuracy"]


def in_memory_splits(arrays):
    """Both splits, preprocessed as kzero's run would (the model's
    normalisation), held in memory."""
    from kzero.pipelines import probe_batch
    from kzero.train import input_normalization

    normalization = input_normalization(bench_config(), arrays)
    n = FLAGS.max_examples
    train = probe_batch({"x_train": arrays["x_train"][:n], "y_train": arrays["y_train"][:n]},
                        None, normalization)
    test = probe_batch({"x_train": arrays["x_test"][:n], "y_train": arrays["y_test"][:n]},
                       None, normalization)
    return train, test


def _jax_loop(model):
    import jax
    import jax.numpy as jnp

    b1, b2, eps = 0.9, 0.999, 1e-8

    def loss_fn(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1)), non_trainable

    @jax.jit
    def step(trainable, non_trainable, m, v, t, x, y):
        (_, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable, x, y)
        t = t + 1
        m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, grads)]
        v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(v, grads)]
        lr = LEARNING_RATE * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        trainable = [w - lr * mi / (jnp.sqrt(vi) + eps) for w, mi, vi in zip(trainable, m, v)]
        return trainable, non_trainable, m, v, t

    @jax.jit
    def correct(trainable, non_trainable, x, y):
        logits, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return jnp.sum(jnp.argmax(logits, axis=-1) == y)

    state = {"trainable": [v.value for v in model.trainable_variables],
             "non_trainable": [v.value for v in model.non_trainable_variables]}
    state["m"] = [jnp.zeros_like(w) for w in state["trainable"]]
    state["v"] = [jnp.zeros_like(w) for w in state["trainable"]]
    state["t"] = jnp.zeros((), jnp.float32)

    def train_step(x, y):
        (state["trainable"], state["non_trainable"], state["m"], state["v"],
         state["t"]) = step(state["trainable"], state["non_trainable"], state["m"],
                            state["v"], state["t"], x, y)

    def count_correct(x, y):
        return correct(state["trainable"], state["non_trainable"], x, y)

    def sync():
        jax.block_until_ready(state["trainable"])

    return train_step, count_correct, sync


def _tensorflow_loop(model):
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(learning_rate=LEARNING_RATE, epsilon=1e-8)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.cast(y, tf.int32), tf.cast(logits, tf.float32)))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)

    @tf.function
    def count_correct(x, y):
        predictions = tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)
        return tf.reduce_sum(tf.cast(predictions == tf.cast(y, tf.int32), tf.int32))

    return train_step, count_correct, lambda: None


def _torch_loop(model):
    import torch

    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, eps=1e-8)

    def train_step(x, y):
        x, y = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device).long()
        loss = torch.nn.functional.cross_entropy(model(x, training=True).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def count_correct(x, y):
        with torch.no_grad():
            x, y = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device).long()
            return (model(x, training=False).argmax(-1) == y).sum().item()

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    return train_step, count_correct, sync


_LOOPS = {"jax": _jax_loop, "tensorflow": _tensorflow_loop, "torch": _torch_loop}


def keras_fit_epoch_times(train, test):
    """Epoch times of Keras' `model.fit` on in-memory arrays (test split
    evaluated after every epoch, as kzero does), and its final test accuracy."""
    import keras

    from kzero.pipelines import epoch_order
    from kzero.train import build_run_model, compile_run_model

    class EpochTimer(keras.callbacks.Callback):
        # Epoch-level hooks only: batch hooks would change what Keras runs.
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    times = []
    model = compile_run_model(build_run_model(bench_config()), bench_config())
    (x, y), test = train, test
    for epoch in range(FLAGS.epochs):
        # kzero's order of the training examples, so that both loops do the
        # same work and must end at the same accuracy (Keras' own shuffle would
        # make the two differ by the luck of the order).
        order = epoch_order(0, epoch, len(x))
        history = model.fit(x[order], y[order], batch_size=FLAGS.batch_size,
                            epochs=epoch + 1, initial_epoch=epoch, validation_data=test,
                            validation_batch_size=FLAGS.batch_size, shuffle=False, verbose=0,
                            callbacks=[EpochTimer()])
    return times, float(history.history["val_accuracy"][-1])


def reference_epoch_times(train, test):
    """Epoch times of the plain loop, and its final test accuracy."""
    import keras

    from kzero.pipelines import epoch_order
    from kzero.train import build_run_model

    model = build_run_model(bench_config())
    train_step, count_correct, sync = _LOOPS[keras.backend.backend()](model)
    (x, y), (test_x, test_y) = train, test
    size = FLAGS.batch_size
    times, accuracy = [], None
    for epoch in range(FLAGS.epochs):
        start = time.perf_counter()
        order = epoch_order(0, epoch, len(x))
        for i in range(0, len(x), size):
            index = order[i:i + size]
            train_step(x[index], y[index])
        correct = sum(int(count_correct(test_x[i:i + size], test_y[i:i + size]))
                      for i in range(0, len(test_x), size))
        sync()
        times.append(time.perf_counter() - start)
        accuracy = correct / len(test_x)
    return times, accuracy


def pipeline_images_per_s(arrays, batches=200):
    """Training images per second that kzero's input pipeline alone delivers
    (augmentation included for the ResNet): what the model must not outrun."""
    import keras

    from kzero.train import run_pipelines

    train, steps, _ = run_pipelines(bench_config(epochs=2), arrays)
    batches = min(batches, 2 * steps - 1)
    iterator = iter(train) if not isinstance(train, keras.utils.PyDataset) else (
        train[i] for i in range(len(train)))
    images, _ = next(iterator)  # compiles and starts the prefetch
    start = time.perf_counter()
    count, corners = 0, []
    for _ in range(batches):
        images, _ = next(iterator)
        count += int(images.shape[0])
        corners.append(images[:1, :1, :1, :1])
    for corner in corners:  # waits for every batch the device was asked for
        keras.ops.convert_to_numpy(corner)
    return count / (time.perf_counter() - start)


def peak_device_memory_mb():
    """Peak accelerator memory of this process, where the backend tells it."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
    elif backend == "torch":
        import torch

        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    else:
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        peak = tf.config.experimental.get_memory_info(gpus[0].name)["peak"] if gpus else None
    return None if peak is None else round(peak / 2**20, 1)


def summarize(times):
    import numpy as np

    steady = [t for repeat in times for t in repeat[1:]]
    return {"first": float(np.min([repeat[0] for repeat in times])),
            "min": float(np.min(steady)), "median": float(np.median(steady)),
            "whole": float(np.median([sum(repeat) for repeat in times]))}


def main(argv):
    import keras

    from kzero.datasets import load_dataset

    arrays = load_dataset(FLAGS.dataset, FLAGS.data_dir)
    n_train = len(arrays["x_train"][:FLAGS.max_examples])
    result = {"backend": keras.backend.backend(), "dataset": FLAGS.dataset,
              "model": FLAGS.model, "scheme": FLAGS.scheme, "precision": FLAGS.precision,
              "pipeline": FLAGS.pipeline, "jit_compile": FLAGS.jit_compile,
              "epochs": FLAGS.epochs,
              "batch_size": FLAGS.batch_size, "train_examples": n_train,
              "repeats": FLAGS.repeats, "against": FLAGS.against}
    times = {"kzero": [], "other": []}
    with tempfile.TemporaryDirectory() as tmp:
        if FLAGS.against in ("reference", "keras_fit"):
            train, test = in_memory_splits(arrays)
        for repeat in range(FLAGS.repeats):
            if FLAGS.against in ("reference", "keras_fit"):
                kzero, accuracy = kzero_epoch_times(arrays, os.path.join(tmp, f"k{repeat}"))
                loop = (reference_epoch_times if FLAGS.against == "reference"
                        else keras_fit_epoch_times)
                other, other_accuracy = loop(train, test)
                times["other"].append(other)
                # Same model, data and optimizer: the accuracies should be close.
                result[f"{FLAGS.against}_final_test_accuracy"] = round(other_accuracy, 4)
            else:
                kzero, accuracy = kzero_epoch_times(arrays, os.path.join(tmp, f"r{repeat}"))
                times["other"].append(kzero_epoch_times(
                    arrays, os.path.join(tmp, f"p{repeat}"), **WITHOUT[FLAGS.against])[0])
            times["kzero"].append(kzero)
            result["kzero_final_test_accuracy"] = round(accuracy, 4)
    kzero, other = summarize(times["kzero"]), summarize(times["other"])
    name = "plain" if FLAGS.against in WITHOUT else FLAGS.against
    result.update({
        "kzero_epoch_s": round(kzero["min"], 4), f"{name}_epoch_s": round(other["min"], 4),
        "kzero_epoch_median_s": round(kzero["median"], 4),
        f"{name}_epoch_median_s": round(other["median"], 4),
        "kzero_first_epoch_s": round(kzero["first"], 4),
        f"{name}_first_epoch_s": round(other["first"], 4),
        "ratio": round(kzero["min"] / other["min"], 4),
        "median_ratio": round(kzero["median"] / other["median"], 4),
        "first_epoch_ratio": round(kzero["first"] / other["first"], 4),
        # All epochs of a run, compilation included: what a user waits for.
        "run_ratio": round(kzero["whole"] / other["whole"], 4),
        "images_per_s": round(n_train / kzero["min"], 1),
        "pipeline_images_per_s": round(pipeline_images_per_s(arrays), 1),
        "peak_host_memory_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_device_memory_mb": peak_device_memory_mb(),
    })
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    app.run(main)
