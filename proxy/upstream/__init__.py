"""Talking to the model server: the pooled client, wire translation and stream frames."""
