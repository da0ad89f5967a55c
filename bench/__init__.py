"""Benchmarks of the trainer and the app: each prints a table and writes bench/results/<name>.json.

Run them as modules from the repository root, e.g. `python -m bench.throughput --data-dir ../shared/data`.
"""

from vae.config import share_cores

share_cores()  # the trainer's threads wait as under train.py; before any benchmark imports torch
