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
    """Check that a parameter is an integer within bounds.

    Parameters
    ----------
    name
        Parameter name, used in the message.
    value
        The value given.
    minimum, maximum
        Inclusive bounds; None for no bound.

    Returns
    -------
    int
        ``value`` as a Python int.

    Raises
    ------
    TypeError
        When ``value`` is not an integer (bools and floats such as ``2.0``
        are refused).
    ValueError
        When ``value`` is out of bounds.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {_shown(value)}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = (
            f"in [{minimum}, {maximum}]"
            if minimum is not None and maximum is not None
            else f">= {minimum}"
            if minimum is not None
            else f"<= {maximum}"
        )
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
    """Check that a parameter is a finite real number within bounds.

    Parameters
    ----------
    name
        Parameter name, used in the message.
    value
        The value given.
    above
        Strict lower bound, ``value > above``.
    at_least
        Inclusive lower bound, ``value >= at_least``.
    below
        Strict upper bound, ``value < below``.

    Returns
    -------
    float
        ``value`` as a Python float.

    Raises
    ------
    TypeError
        When ``value`` is not a real number (bools and strings are refused).
    ValueError
        When ``value`` is NaN, infinite or out of bounds.
    """
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


def check_in_memory(adata, what: str) -> None:
    """Refuse a backed AnnData (``read_h5ad(..., backed="r")``): it cannot be changed or densified in place.

    Parameters
    ----------
    adata
        The AnnData given.
    what
        The function or class that needs it in memory, for the message.

    Raises
    ------
    ValueError
        When ``adata`` is backed.
    """
    if adata.isbacked:
        raise ValueError(f"{what} needs the data in memory; adata is backed by {adata.filename}: use adata.to_memory()")
