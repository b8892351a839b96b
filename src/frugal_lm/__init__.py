"""frugal-lm: pretrain and fine-tune Hierarchical Recurrent language models on a named budget."""

__version__ = "0.1.0"
