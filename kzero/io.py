"""Small file helpers shared by the runner and the callbacks: every file a run
writes is replaced atomically, so an interruption never leaves half a file."""

import csv
import errno
import io
import json
import os
import tempfile


def write_atomic(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from other users
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj):
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_csv(path, columns, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buf.getvalue())


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class DiskFull(OSError):
    """No space left in `directory`, which needed about `needed_bytes` more
    (None where unknown)."""

    def __init__(self, directory, needed_bytes=None):
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), directory)
        self.directory, self.needed_bytes = directory, needed_bytes


def _state_bytes(model):
    """What a saved `.keras` file of `model` holds: its variables and its
    optimizer's."""
    variables = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += list(optimizer.variables)
    total = 0
    for variable in variables:
        count = 1
        for dim in variable.shape:
            count *= int(dim)
        total += count * _itemsize(variable.dtype)
    return total


def _itemsize(dtype):
    name = str(getattr(dtype, "name", dtype))
    return 2 if "16" in name else 8 if "64" in name else 4


def save_model_atomic(model, path):
    """`model.save(path)` through a temporary file in the same directory,
    which is removed whatever happens; a full disk raises `DiskFull` with the
    size the file needs."""
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC and not isinstance(e, DiskFull):
            raise DiskFull(os.path.dirname(os.path.abspath(path)), _state_bytes(model)) from e
        raise
