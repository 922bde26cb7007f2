"""Residual-VQ tokenizer and a masked prior over its tokens (ResGen-style)."""
