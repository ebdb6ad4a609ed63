"""The type aliases of nfcore's public signatures (hints only: nothing here is checked at run time)."""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["Array", "Cache"]

#: a numpy array or a numba.cuda device array (real or simulated): layers and ``Flow`` take
#: both, and a result lives on its input's device. ``Any``, since a device array is no
#: ``np.ndarray`` and numba ships no type stubs.
Array: TypeAlias = Any

#: what ``Transform.forward`` / ``inverse`` keep for ``backward``: the layer's ``NamedTuple``
#: (a tuple), or None after a call with ``need_grad=False``.
Cache: TypeAlias = tuple | None
