"""Data: the shared data library (formats: readers for the formats practitioners already have and one
schema; render: chat templates and trained-token masks; dataset: the tokenized, split dataset folder
that prep and generate write and train reads), and the prep stage (prep.py)."""
