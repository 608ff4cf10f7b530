from privtune.eval.metrics import Metric
from privtune.rouge import rouge_l_f, rouge_tokens


def rouge_l(prediction: str, reference: str) -> float:
    return rouge_l_f(rouge_tokens(prediction), rouge_tokens(reference))


METRIC = Metric(name="rouge_l", order=10, plot=True, per_example=rouge_l,
                description="ROUGE-L F1: the longest common token subsequence, as a share of both texts.")
