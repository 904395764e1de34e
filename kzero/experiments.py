"""The paper's experiments, one flagfile each in kzero/flagfiles/ (installed
with the package, and `flags/` in a checkout): found by name from anywhere,
`--flagfile=mnist_cnn` or `kzero-run mnist_cnn`, while a path to a flagfile
works as absl reads it."""

import os

__all__ = ["FLAGFILES", "flagfile_setting", "paper_experiments", "paper_flagfile",
           "with_paper_flagfiles"]

FLAGFILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flagfiles")


def paper_experiments():
    """The names of the paper's flagfiles, sorted."""
    return sorted(name[:-len(".flags")] for name in os.listdir(FLAGFILES)
                  if name.endswith(".flags"))


def paper_flagfile(name):
    """The path of the paper's flagfile `name` (`mnist_cnn` or
    `mnist_cnn.flags`), or None."""
    path = os.path.join(FLAGFILES, name if name.endswith(".flags") else f"{name}.flags")
    return path if os.sep not in name and os.path.isfile(path) else None


def flagfile_setting(name, flag):
    """The value the paper's flagfile `name` gives `--flag`, as written, or
    None when there is no such flagfile or it leaves the flag out."""
    path = paper_flagfile(name)
    if path is None:
        return None
    with open(path) as f:
        values = [line.strip().split("=", 1)[1] for line in f
                  if line.strip().startswith(f"--{flag}=")]
    return values[-1] if values else None


def with_paper_flagfiles(argv):
    """`argv` with `--flagfile=NAME`, and a bare `NAME`, made the paper's
    flagfile of that name wherever NAME is not a file of its own."""
    resolved = [argv[0]]
    for arg in argv[1:]:
        value = arg.split("=", 1)[1] if arg.startswith("--flagfile=") else arg
        path = None if os.path.exists(value) or value.startswith("-") else paper_flagfile(value)
        resolved.append(f"--flagfile={path}" if path else arg)
    return resolved
