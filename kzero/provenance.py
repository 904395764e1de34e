"""Where and with what a run ran, for its `config.json`."""

import platform

import keras

__all__ = ["accelerator", "library_versions", "processor", "stamp"]


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
