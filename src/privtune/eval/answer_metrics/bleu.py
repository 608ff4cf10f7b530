from privtune.eval.metrics import Metric


def corpus_bleu(predictions: list[str], references: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, [references]).score


def bleu_statistic(predictions: list[str], references: list[str]):
    """Corpus BLEU on any resample of the examples, from each sentence's n-gram counts.

    BLEU is not a mean of sentence scores, so a resample must recompute it from the summed counts;
    extracting the counts once (as sacrebleu's own bootstrap does) makes 1000 resamples cheap.
    """
    import numpy as np
    from sacrebleu.metrics import BLEU

    from privtune.eval.stats import Statistic

    bleu = BLEU()
    counts = np.array(bleu._extract_corpus_statistics(predictions, [references]), dtype=np.int64)

    def compute(indices: np.ndarray) -> np.ndarray:
        return np.array([bleu._compute_score_from_stats(list(counts[row].sum(axis=0))).score for row in indices])

    return Statistic(compute)


def bleu(predictions: list[str], references: list[str]):
    return corpus_bleu(predictions, references), bleu_statistic(predictions, references)


METRIC = Metric(name="bleu", order=20, corpus=bleu,
                description="Corpus BLEU (sacrebleu, 0-100): n-gram precision over all answers, "
                            "with a brevity penalty.")
