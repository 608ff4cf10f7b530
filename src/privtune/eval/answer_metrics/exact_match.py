from privtune.eval.metrics import Metric


def exact_match(prediction: str, reference: str) -> float:
    return float(prediction.strip() == reference.strip())


METRIC = Metric(name="exact_match", order=30, plot=True, per_example=exact_match,
                description="1 when the answer is the reference, surrounding whitespace aside.")
