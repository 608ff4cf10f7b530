"""Full fine-tuning: every weight trains and the artifact holds the whole model."""

from privtune.train.method import Method

METHOD = Method(name="full", order=0, adapter=False, description="all weights train; the artifact is a full model")
