"""``python -m bench``: where every millisecond goes, side by side with PyTorch, a naive service and
the machine's limit, in one run. See ``bench/__main__.py`` and docs/performance.md."""
