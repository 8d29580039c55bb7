"""Generated from proto/distil/v1 by `make proto`; do not edit."""
