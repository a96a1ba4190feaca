"""The peer servers' own code: it runs inside each peer's venv (``bench/.peers/<name>``).

Nothing here imports the benchmark harness: only the peer framework, TensorFlow, numpy,
Pillow and the project's preprocessing (``service.preprocessing``, reached
through ``PYTHONPATH``), so every peer decodes exactly as the service does.
"""
