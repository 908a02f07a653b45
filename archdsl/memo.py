"""Facts about large constant values, computed once per value object.

Spec values are immutable (lists are tuples), and a family often passes one large table to
every block (Video Swin's 392x392 relative-position index to each of its attention blocks).
Each use converts, range-checks, shapes and scans it again; :func:`by_identity` remembers
such a fact per value *object*. An entry holds a reference to its value, so the ``id`` it is
keyed by cannot be reused while the entry exists; the cache is small and least-recently-used.
Only the top-level call of a (recursive) function goes through the cache, and only for
tuples of at least :data:`MIN_ITEMS` items or of nested tuples: small values are cheaper to
scan than to look up.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict

#: the fewest items of a flat tuple worth remembering facts about
MIN_ITEMS = 64
#: entries kept (each holds its value alive)
MAX_ENTRIES = 128

_CACHE: OrderedDict[tuple, tuple] = OrderedDict()
_LOCK = threading.Lock()
#: function name -> [hits, misses] of the cache (for tests and profiling)
STATS: dict[str, list[int]] = {}


def _worth_it(v) -> bool:
    return isinstance(v, tuple) and (len(v) >= MIN_ITEMS or (len(v) > 1 and isinstance(v[0], tuple)))


def by_identity(fn):
    """Decorate ``fn(value, *context)`` (pure, hashable context by identity) to compute once per value object."""
    name = fn.__module__ + "." + fn.__qualname__
    counts = STATS.setdefault(name, [0, 0])

    @functools.wraps(fn)
    def remembered(value, *context):
        if not _worth_it(value):
            return fn(value, *context)
        key = (name, id(value), tuple(id(c) for c in context))
        with _LOCK:
            hit = _CACHE.get(key)
            if hit is not None and hit[0] is value and all(a is b for a, b in zip(hit[1], context)):
                _CACHE.move_to_end(key)
                counts[0] += 1
                return hit[2]
        counts[1] += 1
        result = fn(value, *context)
        with _LOCK:
            _CACHE[key] = (value, context, result)
            while len(_CACHE) > MAX_ENTRIES:
                _CACHE.popitem(last=False)
        return result

    return remembered


def clear() -> None:
    """Forget every remembered fact (tests)."""
    with _LOCK:
        _CACHE.clear()
        for counts in STATS.values():
            counts[:] = [0, 0]
