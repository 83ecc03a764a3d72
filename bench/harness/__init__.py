"""The comparison bench (issue 14): ``python -m bench.harness`` or ``nox -s bench``.

See run.py for what it measures and bench/README.md for why it is fair.
"""
