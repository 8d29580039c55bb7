"""distil services: thin Ray Serve adapters around core logic in `distil`."""
