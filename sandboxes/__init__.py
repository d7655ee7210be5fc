"""Hardened Docker sandboxes where model-written code runs: the container, its in-container runner, the image, the pool."""
