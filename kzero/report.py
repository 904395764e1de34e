"""`python -m kzero.report`: the report's command (`kzero.analysis.report`)."""

from kzero.analysis.report import main

if __name__ == "__main__":
    main()
