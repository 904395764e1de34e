"""`--parallel_runs=auto`: how many runs of one architecture to train as one
model, measured on the machine at hand.

For each family of a grid (its runs that may share a group:
`kzero.parallel.group_key`), group sizes 1, 2, 4, ... up to the family's
size are timed on a few training steps of real batches, and the size with
the most run-steps per second wins. Larger sizes are tried while they gain
more than `MIN_GAIN` and fit in `MEMORY_FRACTION` of the free memory (the
accelerator's, else the host's). A family too small to repay the timing
(under `MIN_RUN_STEPS` update steps in all) trains run by run untimed.

The choice is kept in `<experiment>/parallel_runs.json`, so that a rerun of
the same grid forms the same groups and resumes them.
"""

import fcntl
import gc
import hashlib
import math
import os
import time

import keras

from kzero.io import read_json, write_json

__all__ = ["AUTO", "CHOICES_FILE", "candidate_sizes", "choose_group_size", "family_id"]

AUTO = "auto"
CHOICES_FILE = "parallel_runs.json"

# Below this many update steps (runs x epochs x steps per epoch) a family
# trains run by run: timing the sizes would cost more than groups save.
MIN_RUN_STEPS = 20_000
# A larger group must be this much faster (run-steps per second) to be tried
# further and chosen.
MIN_GAIN = 0.05
# Of the free memory, what a group may be estimated to take.
MEMORY_FRACTION = 0.5
WARMUP_STEPS = 2
# Each size is timed over at least this many steps and seconds: one step's
# time jumps on a shared machine.
TIMED_STEPS = 8
TIMED_SECONDS = 2.0


def candidate_sizes(count):
    """1, 2, 4, ... below `count`, then `count`."""
    sizes, size = [], 1
    while size < count:
        sizes.append(size)
        size *= 2
    return sizes + [count]


def family_id(key):
    """A short stable name of a family (its `group_key` and its runs)."""
    return hashlib.sha1(repr(key).encode()).hexdigest()[:12]


def replica_bytes(model, batch_size):
    """An estimate of one replica's training memory: weights, gradients and
    two Adam moments in float32, and each layer's output kept for the
    backward pass (x3, for its gradient and the backend's temporaries)."""
    outputs = 0
    for layer in model.layers:
        for tensor in keras.tree.flatten(layer.output):
            outputs += math.prod(d for d in tensor.shape[1:] if d is not None)
    return 4 * (4 * model.count_params() + 3 * batch_size * outputs)


def free_memory_bytes():
    """Free memory of the accelerator, else of the host; None where unknown."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform != "cpu":
                stats = device.memory_stats() or {}
                if "bytes_limit" in stats:
                    return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
                return None
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.mem_get_info()[0]
        elif backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_logical_devices("GPU"):
                return None  # tensorflow tells what it holds, not what is free
        return _host_available_bytes()
    except (ValueError, OSError, AttributeError):
        return None


def _host_available_bytes():
    # MemAvailable counts the page cache a process may take over; free pages do not.
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _out_of_memory(error):
    text = str(error).lower()
    return any(sign in text for sign in ("resource_exhausted", "resourceexhausted",
                                         "out of memory"))


def measure_run_steps_per_s(configs, arrays):
    """Run-steps per second of `configs` trained as one group, from at least
    `TIMED_STEPS` steps and `TIMED_SECONDS` on the first training batch,
    after `WARMUP_STEPS` (compilation)."""
    from kzero.parallel import _build_group
    from kzero.train import run_probe

    group, _ = _build_group(configs)
    x, y = run_probe(configs[0], arrays)
    inputs = {tensor.name: x for tensor in group.inputs}
    labels = tuple(y for _ in configs)
    try:
        for _ in range(WARMUP_STEPS):
            group.train_on_batch(inputs, labels)
        start, steps = time.perf_counter(), 0
        while steps < TIMED_STEPS or time.perf_counter() - start < TIMED_SECONDS:
            group.train_on_batch(inputs, labels)  # returns numbers: each step has ended
            steps += 1
        return len(configs) * steps / (time.perf_counter() - start)
    finally:
        del group
        gc.collect()


def choose_group_size(family, arrays, root, say, measure=measure_run_steps_per_s):
    """The group size for `family` (the `RunConfig`s of one `group_key`, all
    of them, finished or not, in grid order): kept from an earlier choice in
    `<root>/parallel_runs.json`, else measured (and kept there). `say` gets
    one line on what was measured and chosen."""
    first = family[0]
    if len(family) == 1 or first.holdout or first.distribution != "none":
        return 1  # a group evaluates no hold-out and is not distributed
    from kzero.train import steps_per_epoch

    steps = steps_per_epoch(first, arrays)
    if len(family) * first.epochs * steps < MIN_RUN_STEPS:
        return 1
    os.makedirs(root, exist_ok=True)
    # One runner times at a time (two at once would slow each other's steps),
    # and a second runner of the grid, or another shard, then reads the choice.
    with open(os.path.join(root, f".{CHOICES_FILE}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _choose(family, arrays, root, say, measure)


def _choose(family, arrays, root, say, measure):
    from kzero.parallel import group_key

    first = family[0]
    path = os.path.join(root, CHOICES_FILE)
    choices = read_json(path) if os.path.exists(path) else {}
    members = [f"{run.variant}/seed_{run.seed}" for run in family]
    # A shard's family is its own part of the grid's.
    name = family_id((group_key(first), tuple(members)))
    kept = choices.get(name)
    if kept:
        say(f"kzero: --parallel_runs=auto: groups of {kept['size']} for {members[0]} and its "
            f"family, as chosen before ({path})")
        return kept["size"]

    from kzero.train import build_run_model

    budget = free_memory_bytes()
    per_replica = replica_bytes(build_run_model(first), first.batch_size)
    measured, best, stopped = {}, 1, ""
    for size in candidate_sizes(len(family)):
        if budget is not None and size * per_replica > MEMORY_FRACTION * budget:
            stopped = f"; {size} would not fit in memory"
            break
        try:
            measured[size] = measure(family[:size], arrays)
        except Exception as error:  # noqa: BLE001  any backend's out-of-memory error
            if not _out_of_memory(error):
                raise
            stopped = f"; {size} ran out of memory"
            break
        if size > 1 and measured[size] <= (1 + MIN_GAIN) * measured[best]:
            break
        best = size
    rates = ", ".join(f"{size}: {rate:.1f}" for size, rate in measured.items())
    say(f"kzero: --parallel_runs=auto: run-steps/s by group size {rates}{stopped}; groups of "
        f"{best} for the {len(family)} runs of {members[0]}'s family")
    choices[name] = {"runs": members, "size": best, "backend": keras.backend.backend(),
                     "run_steps_per_s": {str(size): round(rate, 2)
                                         for size, rate in measured.items()}}
    write_json(path, choices)
    return best
