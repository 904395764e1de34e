"""Grid-level progress: one line per finished epoch of any run, with runs and
run-epochs done of the grid's total and, from the first finished epoch on, an
estimate of the time left."""

import time

import keras

__all__ = ["GridProgress"]


def _duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class GridProgress:
    """Counts the run-epochs of a grid's `runs` (`RunConfig`s) as they finish.

    A run skipped as finished, or one that ended early (diverged), counts all
    its epochs as done. `epochs_held(run)` gives the epochs a run already holds
    on disk (a finished run that is extended, a checkpoint to resume), counted
    as done from the start: without them a grid that extends its runs would
    estimate the time to train them all from epoch 1. The estimate divides the
    run-epochs left by the rate of those trained in this process, start-up and
    compilation included, so the first is pessimistic.
    """

    def __init__(self, runs, say, clock=time.monotonic, epochs_held=lambda run: 0):
        self.epochs = {id(run): run.epochs for run in runs}
        self.done = {id(run): min(epochs_held(run), run.epochs) for run in runs}
        self.finished = set()
        self.say, self.clock = say, clock
        self.trained = 0
        self.start = clock()

    @property
    def total_epochs(self):
        return sum(self.epochs.values())

    @property
    def epochs_done(self):
        return sum(self.done.values())

    def run_finished(self, run):
        self.done[id(run)] = self.epochs[id(run)]
        self.finished.add(id(run))

    def epoch_finished(self, run, epoch):
        """`run` completed its epoch number `epoch` (1-based); prints a line."""
        self.done[id(run)] = max(self.done[id(run)], epoch)
        self.trained += 1
        self.say(self.line())

    def seconds_left(self):
        if not self.trained:
            return None
        rate = (self.clock() - self.start) / self.trained
        return rate * (self.total_epochs - self.epochs_done)

    def line(self):
        left = self.seconds_left()
        estimate = "" if not left else f", about {_duration(left)} left"
        finished = self.finished | {key for key, done in self.done.items()
                                    if done >= self.epochs[key]}
        return (f"kzero: grid {len(finished)}/{len(self.epochs)} runs, "
                f"{self.epochs_done}/{self.total_epochs} run-epochs done{estimate}")

    def callback(self, runs):
        """A Keras callback that reports each epoch of the model training
        `runs` (one run, or a parallel group's)."""
        return _EpochReporter(self, runs)


class _EpochReporter(keras.callbacks.Callback):
    def __init__(self, progress, runs):
        super().__init__()
        self.progress, self.runs = progress, runs

    def on_epoch_end(self, epoch, logs=None):
        for run in self.runs[:-1]:
            self.progress.done[id(run)] = max(self.progress.done[id(run)], epoch + 1)
            self.progress.trained += 1
        self.progress.epoch_finished(self.runs[-1], epoch + 1)
