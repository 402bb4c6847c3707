pytest_plugins = ["tests.fixtures.servers", "tests.fixtures.chorus", "tests.fixtures.analytics"]
