"""Protocols: how a run treats its data where the paper's text is silent.

`paper_text` is what the paper states, filled in the usual way: every
training image is trained on, reshuffled every epoch, batch norm uses its
moving statistics at test time. `paper_code` is what the authors' public code
(c-schicho/ZeroInitializationSymmetry) does instead, item by item:

- `holdout`: 7,000 training images held out as a validation split, drawn anew
  for each run (`random_split` in dataloader.py);
- `order`: "fixed", one random order reused every epoch (`shuffle=False`);
- `bn_statistics`: "batch", test batches normalised with their own statistics
  (the trainer never calls `eval()`);
- `normalization_std`: "kuangliu", kuangliu/pytorch-cifar's CIFAR-10 std
  (0.2023, 0.1994, 0.2010) for the ResNet's inputs;
- `crop_fill`: "black", random crops padded with black before normalising;
- the logistic baselines trained 10 epochs on MNIST and 15 on CIFAR-10 (the
  notebook), whatever `epochs` says.

Each item is also a `RunConfig` field (and a flag) of its own, which
overrides the protocol's value.
"""

import dataclasses

from kzero.registry import Registry

__all__ = ["CROP_FILLS", "BN_STATISTICS", "NORMALIZATION_STDS", "ORDERS", "PROTOCOLS",
           "Protocol", "SETTINGS", "alternative_std", "register_protocol"]

ORDERS = ("epoch", "fixed")
BN_STATISTICS = ("moving", "batch")
NORMALIZATION_STDS = ("dataset", "kuangliu")
CROP_FILLS = ("mean", "black")

# The per-item fields of a protocol, as RunConfig has them.
SETTINGS = ("holdout", "order", "bn_statistics", "normalization_std", "crop_fill")

# kuangliu/pytorch-cifar's normalisation constants, which the paper's code
# copies; the std is not the std of CIFAR-10's pixels (0.2470, 0.2435, 0.2616).
_KUANGLIU_STD = {"cifar10": (0.2023, 0.1994, 0.2010)}


def alternative_std(name, dataset):
    """The per-channel std that `normalization_std=name` gives `dataset`, or
    None for the dataset's own; raises `ValueError` where there is none."""
    if name == "dataset":
        return None
    if dataset not in _KUANGLIU_STD:
        raise ValueError(f"kuangliu/pytorch-cifar has no constants for {dataset}; "
                         f"only for {', '.join(_KUANGLIU_STD)}")
    return _KUANGLIU_STD[dataset]


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A named set of the per-item settings (see the module's docstring).

    Args:
        name: registry name (`--protocol`).
        description: one line for the help text and the report.
        holdout: training examples held out per run as a validation split.
        order: "epoch" (reshuffled every epoch) or "fixed".
        bn_statistics: "moving" or "batch": what batch norm normalises test
            batches (and the diagnostics' probe) with.
        normalization_std: "dataset" or "kuangliu".
        crop_fill: "mean" (crops padded with 0 after normalising, the mean
            colour) or "black" (padded before).
        epochs: {(dataset, model): epochs} that the protocol imposes.
    """

    name: str
    description: str
    holdout: int = 0
    order: str = "epoch"
    bn_statistics: str = "moving"
    normalization_std: str = "dataset"
    crop_fill: str = "mean"
    epochs: dict = dataclasses.field(default_factory=dict)

    def settings(self):
        return {name: getattr(self, name) for name in SETTINGS}


PROTOCOLS = Registry("protocol")


def register_protocol(protocol, replace=False):
    """Adds a `Protocol` to `PROTOCOLS` (for `--protocol`); returns it."""
    return PROTOCOLS.register(protocol.name, protocol, replace=replace)


register_protocol(Protocol(
    "paper_text", "what the paper states: all training images, reshuffled every epoch, "
    "batch norm's moving statistics at test time"))
register_protocol(Protocol(
    "paper_code", "what the authors' code does: a 7,000-image hold-out per run, one fixed "
    "order, batch statistics at test time, kuangliu's std, black crop padding, logistic "
    "baselines 10 (MNIST) and 15 (CIFAR-10) epochs",
    holdout=7000, order="fixed", bn_statistics="batch", normalization_std="kuangliu",
    crop_fill="black", epochs={("mnist", "logreg"): 10, ("cifar10", "logreg"): 15}))
