"""Inference: generation with a KV cache and sampling."""
