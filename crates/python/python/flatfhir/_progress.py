"""Progress reporting: a tqdm bar when tqdm is installed (in notebooks its widget), a
callback, or nothing."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

#: ``progress=`` accepts ``True`` (a tqdm bar when tqdm is installed, else nothing),
#: ``False``/``None`` (silent) or a callable ``(done, total)`` called as work advances, with
#: ``done`` and ``total`` in units of input bytes (each byte counts twice: once read and
#: parsed, once written or handed over; ``total`` is ``None`` when unknown).
ProgressArg = Union[bool, None, Callable[[int, Optional[int]], Any]]


class Reporter:
    """Turns the native module's increments into a bar or callback calls."""

    def __init__(self, progress: ProgressArg, total: Optional[int], desc: str, unit: str = "B") -> None:
        self.done = 0
        self.total = total
        self._bar: Any = None
        self._callback: Optional[Callable[[int, Optional[int]], Any]] = None
        if callable(progress):
            self._callback = progress
        elif progress:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(
                    total=total,
                    desc=desc,
                    unit=unit,
                    unit_scale=True,
                    unit_divisor=1024,
                    leave=False,
                )

    def __call__(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        if self._callback is not None:
            self._callback(self.done, self.total)

    @property
    def hook(self) -> Optional[Callable[[int], None]]:
        """What the native module is given: ``None`` when nobody listens."""
        return self if (self._bar is not None or self._callback is not None) else None

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description(text, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
