from privtune.eval.metrics import Metric, json_fields


def json_field_accuracy(prediction: str, reference: str) -> float | None:
    """None (not scored) unless the reference is a non-empty JSON object."""
    expected = json_fields(reference)
    if not expected:
        return None
    got = json_fields(prediction) or {}
    return sum(got.get(k) == v for k, v in expected.items()) / len(expected)


METRIC = Metric(name="json_field_accuracy", order=50, plot=True, per_example=json_field_accuracy,
                description="Share of the reference JSON object's fields the answer reproduces exactly "
                            "(examples whose reference is not a JSON object are left out).")
