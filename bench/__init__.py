"""crohooks benchmarks: ``make bench`` (``python -m bench``) runs them all and prints a table.

Every figure is printed next to a baseline measured in the same run, on this machine, so
the ratios mean something where the absolute numbers don't. Nothing here is part of
``make test``.
"""
