"""Inference: load a trained model, generate with KV caches, chat, serve over HTTP."""
