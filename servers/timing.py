"""Per-request `Server-Timing` accumulation: where the time of a request went."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter


class ServerTiming:
    """Durations by metric name (`auth`, `store`, `pw`, `issue`), summed over a request."""

    __slots__ = ("_durations",)

    def __init__(self) -> None:
        self._durations: dict[str, float] = {}

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        """Add the wall time of the `with` block to metric `name`."""
        start = perf_counter()
        try:
            yield
        finally:
            self.add(name, perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        """Add `seconds` to metric `name`."""
        self._durations[name] = self._durations.get(name, 0.0) + seconds

    def header(self) -> str:
        """Return the header value, durations in milliseconds; `auth` is always present."""
        d = self._durations
        parts = [f"auth;dur={d.get('auth', 0.0) * 1000:.3f}"]
        parts += [f"{k};dur={v * 1000:.3f}" for k, v in d.items() if k != "auth"]
        return ", ".join(parts)
