"""What the analysis's figures share."""

import contextlib

__all__ = ["figure"]


@contextlib.contextmanager
def figure(path, title, panels=2):
    """`panels` axes side by side, for the block to draw into; the figure is
    saved to `path` under `title` when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), dpi=110, squeeze=False)
    try:
        yield axes[0]
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
