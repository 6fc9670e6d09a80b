"""Progress of a long run: one live line on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

PLAIN_EVERY = 5.0


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Says which measurement is running, how far it is, and what the load looks like."""

    def __init__(self, total_cells: int, cell_seconds: float, stream: TextIO | None = None) -> None:
        self._out = stream or sys.stderr
        self._live = self._out.isatty()
        self._total = total_cells
        self._cell_seconds = cell_seconds
        self._started = time.monotonic()
        self._index = 0
        self._label = ""
        self._last_plain = 0.0

    def start_cell(self, index: int, config: str, scenario: str, repeat: int) -> None:
        """Announce measurement `index` (1-based) of the run."""
        self._index = index
        self._label = f"[{index}/{self._total}] {config} · {scenario}" + (
            f" · repeat {repeat}" if repeat > 1 else ""
        )
        self._line(f"{self._label} · starting", force=True)

    def tick(self, elapsed: float, rps: float | None, failures: int | None) -> None:
        """Show the current measurement's elapsed time, live rate and failures."""
        remaining_cells = self._total - self._index
        eta = max(0.0, self._cell_seconds - elapsed) + remaining_cells * self._cell_seconds
        load = f"{rps:,.0f} req/s" if rps is not None else "starting load"
        errors = f" · {failures} failures" if failures else ""
        self._line(
            f"{self._label} · {_clock(elapsed)} · {load}{errors} · run {_clock(self._run_time())}"
            f" · ETA {_clock(eta)}"
        )

    def note(self, message: str) -> None:
        """Print a message on a line of its own."""
        self._line(message, force=True, keep=True)

    def _run_time(self) -> float:
        return time.monotonic() - self._started

    def _line(self, text: str, *, force: bool = False, keep: bool = False) -> None:
        if self._live:
            self._out.write("\r\033[2K" + text + ("\n" if keep else ""))
            self._out.flush()
            return
        now = time.monotonic()
        if force or now - self._last_plain >= PLAIN_EVERY:
            self._last_plain = now
            print(text, file=self._out, flush=True)

    def close(self) -> None:
        """End the live line."""
        if self._live:
            self._out.write("\n")
            self._out.flush()
