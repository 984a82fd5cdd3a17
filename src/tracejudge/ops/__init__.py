"""Operating tracejudge: Prometheus metrics, broker readings, the health of a worker's event loop, the metrics server.

Imports nothing of tracejudge's but ``config``, so every layer can record metrics (``ops.metrics``).
"""
