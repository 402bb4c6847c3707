import time, pytest
def test_a(redis_url): pass
