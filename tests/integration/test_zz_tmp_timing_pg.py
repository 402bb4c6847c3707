def test_b(postgres_url): pass
