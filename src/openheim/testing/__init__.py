"""Helpers for testing code built on openheim (and openheim itself).

- :func:`openheim.testing.tiny_gguf.write_tiny_gguf`: a tiny random-weight
  GGUF model for local-model tests without downloads.
- :func:`openheim.testing.serve.start_serve`: ``openheim serve`` in a child
  process, returned once it is ready (with ``free_port`` and ``stop_process``).
- :func:`openheim.testing.servers.private_server`: a Redis or NATS server of the
  test's own, to stop, restart or kill.
"""
