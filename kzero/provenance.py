"""Where and with what a run ran, for its `config.json`."""

import os
import platform

import keras

from kzero.config import RunConfig

__all__ = ["accelerator", "library_versions", "processor", "recorded_processor", "resumed_on",
           "stamp"]


def library_versions():
    import numpy

    import kzero

    versions = {"python": platform.python_version(), "kzero": kzero.__version__,
                "keras": keras.__version__, "numpy": numpy.__version__}
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module:
        versions[module] = __import__(module).__version__
    return versions


def accelerator():
    """What the backend computes on, e.g. "NVIDIA H100 80GB HBM3" or "cpu"."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return device.device_kind if device.platform != "cpu" else "cpu"
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get(
            "device_name", "gpu") if gpus else "cpu"
    return "unknown"


def processor():
    """The CPU's model name, e.g. "Intel(R) Xeon(R) Processor", or None where
    the platform does not say. Runs of one seed under one backend are
    bit-identical on one CPU model but were not across two models
    (docs/reproducing.md, "On another CPU"), so a run names its own."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def stamp(config, input_pipeline):
    """`config` with this process's backend, accelerator, processor, host and
    library versions, the input pipeline that runs, and the initial weights' stream."""
    from kzero.initializers import INIT_STREAM

    return config.with_provenance(backend=keras.backend.backend(), accelerator=accelerator(),
                                  processor=processor(), host=platform.node(),
                                  versions=library_versions(),
                                  input_pipeline=input_pipeline, init_stream=INIT_STREAM)


def recorded_processor(workdir):
    """The processor that the config.json in `workdir` names (None where it
    names none), or None where there is no readable config.json."""
    try:
        return RunConfig.read(os.path.join(workdir, "config.json"),
                              check_names=False).provenance.processor
    except (OSError, ValueError, TypeError):
        return None


def resumed_on(config, earlier, initial_epoch, log=None):
    """`config` for a run that resumes after `initial_epoch` epochs, which the
    processor `earlier` trained (what its config.json named), with a
    provenance.processor that keeps that history where the processor has
    changed: "A up to epoch 13, then B". One seed rounds differently on
    another CPU model, so such a run equals no run trained on one of them;
    `log` gets a line that says so."""
    now = config.provenance.processor
    if not initial_epoch or now is None:
        return config
    if earlier is None:
        # Written by a kzero that did not record processors: nothing to compare.
        return config.with_provenance(
            processor=f"a processor not recorded up to epoch {initial_epoch}, then {now}")
    last = earlier.rsplit(", then ", 1)[-1]
    if last == now:
        return config.with_provenance(processor=earlier)
    if log is not None:
        log(f"its first {initial_epoch} epochs trained on {last}, the rest train on {now}: "
            "it will not equal a run trained on either alone")
    return config.with_provenance(processor=f"{earlier} up to epoch {initial_epoch}, then {now}")
