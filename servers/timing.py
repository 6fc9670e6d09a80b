"""Per-request `Server-Timing` accumulation: where the time of a request went."""

from __future__ import annotations

from time import perf_counter
from types import TracebackType


class _Span:
    """`with timing.measure(name):` — a plain class, cheaper than a generator on the hot path."""

    __slots__ = ("_name", "_start", "_timing")

    def __init__(self, timing: ServerTiming, name: str) -> None:
        self._timing = timing
        self._name = name
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = perf_counter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timing.add(self._name, perf_counter() - self._start)


class ServerTiming:
    """Durations by metric name (`auth`, `store`, `pw`, `issue`), summed over a request."""

    __slots__ = ("_durations",)

    def __init__(self) -> None:
        self._durations: dict[str, float] = {}

    def measure(self, name: str) -> _Span:
        """Return a context manager adding the wall time of its block to metric `name`."""
        return _Span(self, name)

    def add(self, name: str, seconds: float) -> None:
        """Add `seconds` to metric `name`."""
        self._durations[name] = self._durations.get(name, 0.0) + seconds

    def header(self) -> str:
        """Return the header value, durations in milliseconds; `auth` is always present."""
        d = self._durations
        parts = [f"auth;dur={d.get('auth', 0.0) * 1000:.3f}"]
        parts += [f"{k};dur={v * 1000:.3f}" for k, v in d.items() if k != "auth"]
        return ", ".join(parts)
