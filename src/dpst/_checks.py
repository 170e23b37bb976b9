"""Argument checks whose messages name the parameter and the bad value.

A wrong type (``alpha="100"``) raises TypeError, a wrong value ValueError;
each in one line, before the value can fail somewhere deep in torch or numpy.
"""

from __future__ import annotations

import math
import numbers


def _shown(value) -> str:
    return f"{value!r} ({type(value).__name__})" if isinstance(value, str) else repr(value)


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {_shown(value)}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = (f"in [{minimum}, {maximum}]" if minimum is not None and maximum is not None
                  else f">= {minimum}" if minimum is not None else f"<= {maximum}")
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return int(value)


def check_real(
    name: str,
    value,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
) -> float:
    """``value`` as a finite float with ``value > above``, ``>= at_least``, ``< below``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {_shown(value)}")
    value = float(value)
    bounds = [
        f"{relation} {limit:g}"
        for relation, limit in ((">", above), (">=", at_least), ("<", below))
        if limit is not None
    ]
    wanted = " and ".join(["finite", *bounds])
    if (
        not math.isfinite(value)
        or (above is not None and not value > above)
        or (at_least is not None and not value >= at_least)
        or (below is not None and not value < below)
    ):
        raise ValueError(f"{name} must be {wanted}, got {value:g}")
    return value
