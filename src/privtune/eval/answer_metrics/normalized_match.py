from privtune.eval.metrics import Metric, normalize


def normalized_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


METRIC = Metric(name="normalized_match", order=40, plot=True, per_example=normalized_match,
                description="1 when the answer is the reference ignoring case, punctuation and spacing (SQuAD).")
