"""authbench analysis: load a run's results, draw its charts, write its report, compare runs."""

from __future__ import annotations
