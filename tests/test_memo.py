"""archdsl.memo: facts about large constant values are computed once per value object, never confused
between objects (equal or not), and the cache stays bounded."""

from __future__ import annotations

import archdsl
from archdsl import memo


def test_computed_once_per_object_and_never_shared_between_objects():
    calls = []

    @memo.by_identity
    def total(v):
        calls.append(v)
        return sum(map(sum, v))

    table = tuple(tuple(range(i, i + 100)) for i in range(100))
    assert total(table) == total(table) == sum(map(sum, table))
    assert len(calls) == 1
    twin = tuple(tuple(row) for row in table)          # equal, another object: computed again
    assert total(twin) == total(table) and len(calls) == 2
    small = (1, 2, 3)                                  # not worth remembering
    assert total((small,) * 1) == 6 and total((small,) * 1) == 6


def test_context_objects_are_part_of_the_key():
    @memo.by_identity
    def scaled(v, factor):
        return len(v) * factor[0]

    table = tuple(range(200))
    assert scaled(table, [2]) == 400
    assert scaled(table, [3]) == 600                   # another context object: not the cached result


def test_the_cache_is_bounded():
    @memo.by_identity
    def first(v):
        return v[0]

    for i in range(memo.MAX_ENTRIES * 2):
        assert first(tuple(range(i, i + memo.MIN_ITEMS))) == i
    assert len(memo._CACHE) <= memo.MAX_ENTRIES


def test_one_table_given_to_many_blocks_is_checked_once():
    """Video Swin gives its 392x392 relative-position index to every attention block: loading the
    12-block swin3d_t took ~6 s when each block converted, range-checked and scanned it again."""
    spec = """
let TABLE = [[(i * 7 + j) % 50 for j in range(300)] for i in range(300)]
block B() {
    let idx = relative_position_index: buffer(TABLE)
    let t = table: parameter([50, 4])
    from in + mean(index(t, idx), [0, 1])
}
model m input 3x4 { for i in range(24) { B() } }
"""
    memo.clear()
    loaded = archdsl.load_spec(spec)
    assert loaded.summary().totals["buffers"] == 24 * 300 * 300
    for name in ("archdsl.ops.algebra._nested_values_of", "archdsl.ops.algebra.values_shape",
                 "archdsl.ops.registry._first_out_of_range"):
        hits, misses = memo.STATS[name]
        assert misses <= 2 and hits >= 23, (name, hits, misses)
