from frugal_lm.infer.decode_step import batch_bucket, bucket_count, context_bucket, every_bucket


def test_buckets_are_powers_of_two_within_the_engines_limits():
    assert [batch_bucket(rows, 6) for rows in range(1, 7)] == [1, 2, 4, 4, 6, 6]
    assert [context_bucket(length, 300) for length in (1, 128, 129, 256, 257, 300)] == [128, 128, 256, 256, 300, 300]
    assert context_bucket(5, 64) == 64  # never beyond the engine's context
    buckets = every_bucket(6, 300)
    assert buckets == [(rows, context) for rows in (1, 2, 4, 6) for context in (128, 256, 300)]
    assert len(buckets) <= bucket_count(6, 300)
