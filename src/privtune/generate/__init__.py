"""Generate: the "little data" path, instruction data written by a teacher model."""
