"""Prints docs/flags.md from the runner's flags:

    python scripts/flags_doc.py > docs/flags.md
"""

from kzero import run

if __name__ == "__main__":
    print(run.flags_markdown(), end="")
