"""Eval: does the fine-tune beat its baseline on held-out data."""
