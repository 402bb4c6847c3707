"""A toy context, built as docs/ARCHITECTURE.md's recipe "Adding a context" says: one module
per layer and one registration (``context.BOARDS``), nothing else edited. The test in
tests/e2e/test_adding_a_context.py runs Chorus with it."""
