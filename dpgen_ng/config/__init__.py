"""Typed, strictly validated settings built once from param.json / machine.json / init.json."""
