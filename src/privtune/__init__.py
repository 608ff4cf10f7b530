"""privtune: seed examples or your own records -> a fine-tuned model you own and run yourself."""

__version__ = "0.1.0"
