"""Data: records, synthetic tasks, tokenizer, tokenize, mix, packing, loader."""
