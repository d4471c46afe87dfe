"""Command-line programs; the top-level ``train_*.py`` files are thin wrappers over them."""
