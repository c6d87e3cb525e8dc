import pytest

from loopline.processors.wire.partitioning import murmur2, partition_for


@pytest.mark.parametrize("key,expected", [  # Java client's Utils.murmur2 test vectors
    ("21", -973932308), ("foobar", -790332482), ("a-little-bit-long-string", -985981536),
    ("a-little-bit-longer-string", -1486304829), ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    ("abc", 479470107),
])
def test_java_vectors(key, expected):
    assert murmur2(key.encode()) == expected


def test_partition_in_range_and_spread():
    counts = [0] * 4
    for i in range(4000):
        p = partition_for(f"ev-{i}".encode(), 4)
        counts[p] += 1
    assert min(counts) > 800


def test_vectorised_partitions_match_the_scalar_function():
    import random

    from loopline.processors.wire.partitioning import partitions_for

    rng = random.Random(3)
    keys = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 41))) for _ in range(3000)]
    keys += [f"ev-{i}" for i in range(500)]  # str keys are UTF-8 encoded
    keys += ["é-ü-ß", "", "x\0", "\0"]
    for n in (1, 4, 7):
        got = partitions_for(keys, n).tolist()
        strs = [k for k in keys if isinstance(k, str)]
        assert partitions_for(strs, n).tolist() == [partition_for(k.encode(), n) for k in strs]  # the all-str path
        want = [partition_for(k.encode() if isinstance(k, str) else k, n) for k in keys]
        assert got == want
