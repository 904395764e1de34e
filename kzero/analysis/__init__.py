"""The analysis of finished runs: the report (`python -m kzero.report`), the
studies beyond the paper, the first-steps census, their statistics and the
paper's numbers. The core (initializers, models, data, training, grid) imports
none of it."""
