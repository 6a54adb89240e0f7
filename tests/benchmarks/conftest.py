"""The benchmark modules import each other by name (as `throughput.py` runs them): put their dir on the path."""

from __future__ import annotations

import os
import sys

BENCHMARKS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks"
)
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)
