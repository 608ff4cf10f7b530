"""Models: loading by path, hub id or artifact, and the offline tiny base model."""
