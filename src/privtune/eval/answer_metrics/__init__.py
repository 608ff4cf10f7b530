"""Answer metrics, one module each, each naming its `METRIC = Metric(...)` (privtune.eval.metrics.Metric).

The eval scores every answer with each of them, and the report, `privtune compare` and the chart show
them in their `order`: a new metric is a new module here.
"""
