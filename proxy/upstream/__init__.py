"""Talking to the model servers: the pool, one dialect class per upstream API (``Upstream`` in
``client.py``: Ollama's native API, OpenAI-compatible servers), and stream frames."""
