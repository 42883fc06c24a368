"""ragproxy: a local retrieval proxy in front of Ollama."""
