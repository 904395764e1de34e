"""One small registry class, used once per concept (datasets, models, init
schemes, optimizers, activations): a new entry is one `register` call, in
kzero or in the user's own code, and an unknown name fails with the list of
valid ones."""

__all__ = ["Registry"]


class Registry:
    """Names to entries of one kind.

    >>> OPTIMIZERS = Registry("optimizer")
    >>> @OPTIMIZERS.register("sgd")
    ... def sgd(learning_rate, weight_decay): ...
    >>> OPTIMIZERS.get("adam")
    Traceback (most recent call last):
    ValueError: unknown optimizer 'adam'; valid: sgd
    """

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, name, entry=None, *, replace=False):
        """Adds `entry` under `name`; without `entry`, a decorator that adds
        what it decorates. A name is taken once unless `replace` is set."""
        def add(entry):
            if name in self._entries and not replace:
                raise ValueError(f"{self.kind} {name!r} is registered already; "
                                 "pass replace=True to replace it")
            self._entries[name] = entry
            return entry

        return add if entry is None else add(entry)

    def get(self, name):
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(self)}") from None

    def names(self):
        return tuple(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)

    def __repr__(self):
        return f"Registry({self.kind!r}: {', '.join(self)})"
