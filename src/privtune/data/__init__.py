"""Data: readers for the formats practitioners already have, one schema, and the prep stage."""
