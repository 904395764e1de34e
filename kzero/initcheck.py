"""Whether a model's initial weights can break symmetry: a check before
training, for any built Keras model.

The paper breaks the symmetry of zero kernels with random biases. A batch
norm subtracts each channel's batch mean, and so removes any per-channel
constant added in front of it: a conv's bias directly before it, and, when
the conv's kernel is zero, the conv's whole output (the activation of its
bias, one constant per channel, passes unchanged through pooling). Then the
random biases never reach the next layer, what is left is rounding error
divided by sqrt(epsilon), and whether the network wakes depends on how each
backend rounds the batch mean.

`check_init(model, x, y)` says, before any step:
  - statically, from the graph: which conv and dense layers feed a batch
    norm that removes their bias (whatever their kernel), and which feed one
    that removes their output when their kernel is zero;
  - which of those layers do have a zero kernel and a random bias now: the
    symmetry breaking the scheme meant, erased;
  - which trainable variables have an exactly zero gradient at step 1;
  - how much each stage's output depends on the input (`input_dependence`).

`erasing_normalizations` is also what the `zero_normal_bn` scheme uses to move
those biases into the batch norms' shift (`kzero.initializers`).
"""

import keras
import numpy as np

from kzero.gradients import gradient_function
from kzero.layers import StableBatchNormalization

__all__ = ["NORMALIZATIONS", "StageProbe", "check_init", "erasing_normalizations", "init_warning",
           "input_dependence", "residual_branch_ends", "stage_layers"]

# Layers that subtract each channel's batch mean in training.
NORMALIZATIONS = (keras.layers.BatchNormalization, StableBatchNormalization)

# Layers that map a per-channel constant plus x to that constant plus their
# map of x: a bias passes through them to a normalisation unchanged.
_SHIFT_COMMUTING = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D,
                    keras.layers.MaxPooling3D, keras.layers.AveragePooling1D,
                    keras.layers.AveragePooling2D, keras.layers.AveragePooling3D,
                    keras.layers.Dropout, keras.layers.SpatialDropout2D)
# Layers that map a per-channel constant to another per-channel constant: a
# zero-kernel layer's output (the activation of its bias) stays one through them.
_ELEMENTWISE = (keras.layers.Activation, keras.layers.ELU, keras.layers.ReLU,
                keras.layers.LeakyReLU, keras.layers.PReLU, keras.layers.Softmax)

_WEIGHTED = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _layers(model):
    """Every layer of `model`, nested models flattened, in order."""
    found = []
    for layer in model.layers:
        found.extend(_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return found


def _consumers(layers):
    """id(tensor) -> the layers that take it as an input."""
    consumers = {}
    for layer in layers:
        try:
            inputs = keras.tree.flatten(layer.input)
        except (AttributeError, ValueError):  # a layer never called in a graph
            continue
        for tensor in inputs:
            consumers.setdefault(id(tensor), []).append(layer)
    return consumers


def _linear_activation(layer):
    return getattr(layer, "activation", None) in (None, keras.activations.linear)


def _normalization_after(layer, consumers, passes):
    """The normalisation that `layer`'s output reaches through layers of the
    `passes` kinds alone, with no other consumer on the way; else None."""
    current = layer
    while True:
        following = consumers.get(id(current.output), [])
        if len(following) != 1:
            return None
        current = following[0]
        if isinstance(current, NORMALIZATIONS):
            return current
        if not isinstance(current, passes):
            return None


def erasing_normalizations(model, zero_kernel=True):
    """{conv or dense layer with a bias: the batch norm that removes it}.

    With `zero_kernel` (the question for zero-weight schemes): the layers
    whose output, when their kernel is zero, is a per-channel constant that
    the batch norm removes: the path to it holds only pooling, dropout and
    elementwise activations, the layer's own activation included. Without:
    the layers whose bias the batch norm removes whatever their kernel, with
    no activation on the path."""
    layers = _layers(model)
    consumers = _consumers(layers)
    found = {}
    for layer in layers:
        if not isinstance(layer, _WEIGHTED) or getattr(layer, "bias", None) is None:
            continue
        if zero_kernel:
            normalization = _normalization_after(layer, consumers,
                                                 _SHIFT_COMMUTING + _ELEMENTWISE)
        elif _linear_activation(layer):
            normalization = _normalization_after(layer, consumers, _SHIFT_COMMUTING)
        else:
            normalization = None
        if normalization is not None:
            found[layer] = normalization
    return found


def _ancestry(tensor, producers):
    """`tensor`, then the input of the layer that made it, and so on back
    through single-input layers: the chain a residual path runs along."""
    chain = [tensor]
    while id(chain[-1]) in producers:
        try:
            inputs = keras.tree.flatten(producers[id(chain[-1])].input)
        except (AttributeError, ValueError):  # a layer called more than once
            break
        if len(inputs) != 1:
            break
        chain.append(inputs[0])
    return chain


def residual_branch_ends(model):
    """The batch norms that end a residual branch: of the inputs of an `Add`
    that joins a branch to its shortcut, the batch norm on the longer path
    back to the tensor both paths start from (the block's input). A shortcut
    is the block's input itself, or a short projection (conv and batch norm)
    of it, so in kuangliu's blocks and torchvision's the result is the last
    batch norm of each branch (bn2 of a basic block, bn3 of a bottleneck)."""
    layers = _layers(model)
    producers = {}
    for layer in layers:
        try:
            producers[id(layer.output)] = layer
        except (AttributeError, ValueError):  # a layer never called in a graph
            continue
    ends = []
    for join in layers:
        if not isinstance(join, keras.layers.Add):
            continue
        try:
            inputs = keras.tree.flatten(join.input)
        except (AttributeError, ValueError):  # a layer called more than once
            continue
        if len(inputs) != 2:
            continue
        chains = [_ancestry(tensor, producers) for tensor in inputs]
        later = {id(tensor) for tensor in chains[1]}
        fork = next((id(t) for t in chains[0] if id(t) in later), None)
        if fork is None:
            continue
        lengths = [[id(t) for t in chain].index(fork) for chain in chains]
        branch = inputs[lengths.index(max(lengths))]
        end = producers.get(id(branch))
        if lengths[0] != lengths[1] and isinstance(end, NORMALIZATIONS):
            ends.append(end)
    return ends


def input_dependence(outputs):
    """How much `outputs` (a batch, examples on the first axis) depend on the
    example: each feature's standard deviation across the batch, averaged
    over features, over the root mean square of the whole batch. 0 when every
    example gives the same output; about 1 when the outputs vary as much
    across examples as they are large. Also returns that root mean square."""
    values = np.asarray(keras.ops.convert_to_numpy(outputs), np.float64)
    values = values.reshape(len(values), -1)
    rms = float(np.sqrt(np.mean(values**2)))
    spread = float(np.mean(values.std(axis=0)))
    return (spread / rms if rms > 0 else 0.0), rms


def stage_layers(model, names=()):
    """The layers whose outputs `check_init` and the stage recorder look at:
    those of `names` that `model` has (a model's `ModelSpec.stages`), else
    every batch norm and every conv or dense layer but the output one."""
    layers = _layers(model)
    by_name = {layer.name: layer for layer in layers}
    chosen = [by_name[name] for name in names if name in by_name]
    if chosen:
        return chosen
    weighted = [layer for layer in layers if isinstance(layer, _WEIGHTED)]
    return [layer for layer in layers if isinstance(layer, NORMALIZATIONS)
            or (isinstance(layer, _WEIGHTED) and layer is not weighted[-1])]


class StageProbe:
    """`probe(x)`: {stage: {"input_dependence", "rms"}} of the outputs of
    `model`'s stages (`stage_layers(model, stages)`) and of its logits on the
    batch `x`, in training mode: batch statistics, as an update step
    normalises (the moving statistics of a fresh model are 0 and 1, which
    would hide what a batch norm removes). The model's state is left as it
    was: the moving statistics a training call updates are put back."""

    def __init__(self, model, stages=()):
        chosen = stage_layers(model, stages)
        self.model = model
        self.names = [layer.name for layer in chosen] + ["logits"]
        self._outputs = keras.Model(model.inputs,
                                    [layer.output for layer in chosen] + [model.outputs[0]])

    def __call__(self, x):
        state = self.model.non_trainable_variables
        saved = [keras.ops.copy(v.value) for v in state]
        outputs = self._outputs(keras.ops.convert_to_tensor(x), training=True)
        for variable, value in zip(state, saved):
            variable.assign(value)
        found = {}
        for name, output in zip(self.names, outputs):
            dependence, rms = input_dependence(output)
            found[name] = {"input_dependence": dependence, "rms": rms}
        return found


def _is_zero(variable):
    return not np.any(keras.ops.convert_to_numpy(variable))


def _is_random(variable):
    values = keras.ops.convert_to_numpy(variable)
    return values.size > 1 and float(np.ptp(values)) > 0


def check_init(model, x, y, stages=(), loss=None):
    """What a built model's initial weights let through, on the batch `(x, y)`
    (preprocessed as for training). Changes nothing. Returns a dict, as
    recorded in a run's `summary.json` under `init_check`:

        biased_layers: conv and dense layers with a bias;
        bias_removed_by: {layer: batch norm} that removes its bias for any
            kernel (`erasing_normalizations(zero_kernel=False)`);
        removed_if_zero_kernel: {layer: batch norm} that removes its whole
            output while its kernel is zero;
        erased_symmetry_breaking: the layers of `removed_if_zero_kernel`
            whose kernel is zero and whose bias is random now: the random
            biases a zero-weight scheme relies on, removed;
        variables, with_gradient: trainable variables, and the paths of those
            whose gradient on the batch is not exactly zero (step 1);
        stages: {stage: {"input_dependence": ..., "rms": ...}} of each stage
            output and of the logits, in training mode (batch statistics, as
            step 1 sees them; see `input_dependence`).

    Args:
        model: a built Keras model whose output is the logits.
        x, y: a batch of inputs and integer labels.
        stages: names of the layers whose outputs to look at (see
            `stage_layers`); default every batch norm and hidden conv or dense.
        loss: `loss(y, logits)`; default cross-entropy on logits.
    """
    loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    removed = erasing_normalizations(model, zero_kernel=True)
    bias_removed = erasing_normalizations(model, zero_kernel=False)
    biased = [layer for layer in _layers(model)
              if isinstance(layer, _WEIGHTED) and getattr(layer, "bias", None) is not None]
    erased = [layer.name for layer in removed
              if _is_zero(layer.kernel) and _is_random(layer.bias)]
    gradients = gradient_function(model, loss)(x, y)
    with_gradient = [variable.path for variable, gradient
                     in zip(model.trainable_variables, gradients) if np.any(gradient)]
    return {
        "biased_layers": len(biased),
        "bias_removed_by": {layer.name: norm.name for layer, norm in bias_removed.items()},
        "removed_if_zero_kernel": {layer.name: norm.name for layer, norm in removed.items()},
        "erased_symmetry_breaking": erased,
        "variables": len(model.trainable_variables),
        "with_gradient": with_gradient,
        "stages": StageProbe(model, stages)(x),
    }


def init_warning(check, model_name, scheme_name):
    """The one line the runner prints before training where random biases of
    zero-kernel layers are removed by a batch norm; None where none are."""
    erased = check["erased_symmetry_breaking"]
    if not erased:
        return None
    woken = check["with_gradient"]
    shown = ", ".join(woken[:3]) + (f" and {len(woken) - 3} more" if len(woken) > 3 else "")
    gradient = (f"only {shown} {'has' if len(woken) == 1 else 'have'} a gradient" if woken
                and len(woken) <= 3 else f"{len(woken)} of {check['variables']} trainable "
                f"variables have a gradient" if woken else "no variable has a gradient")
    return (f"{scheme_name} on {model_name}: {len(erased)} of {check['biased_layers']} biased "
            f"conv and dense layers feed a batch norm that removes their random bias; at step 1 "
            f"{gradient} (kzero.check_init; a scheme that puts the random values in the batch "
            f"norms' shift instead: zero_normal_bn)")
