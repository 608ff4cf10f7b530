"""The indexed near-duplicate filter decides exactly as rouge_score's brute force does."""

import random

from rouge_score import rouge_scorer

from privtune.generate.neardup import NearDuplicateIndex
from privtune.rouge import lcs_length, lcs_length_table, rouge_l_f, rouge_tokens

WORDS = "write a short poem about the sea give me three tips for sleeping better explain why sky is blue list".split()


def brute_force_keep(stream, threshold=0.7):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    kept, decisions = [], []
    for text in stream:
        keep = all(scorer.score(old, text)["rougeL"].fmeasure <= threshold for old in kept)
        decisions.append(keep)
        if keep:
            kept.append(text)
    return decisions


def indexed_keep(stream, threshold=0.7):
    index, decisions = NearDuplicateIndex(threshold), []
    for text in stream:
        keep = not index.is_near_duplicate(text)
        decisions.append(keep)
        if keep:
            index.add(text)
    return decisions


def test_tokens_and_score_match_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    a, b = "Write a poem, about THE sea!", "write a short poem about the blue sea"
    assert rouge_tokens(a) == ["write", "a", "poem", "about", "the", "sea"]
    assert rouge_l_f(rouge_tokens(b), rouge_tokens(a)) == scorer.score(a, b)["rougeL"].fmeasure


def test_decisions_equal_brute_force_on_random_streams():
    rng = random.Random(0)
    for threshold in (0.7, 0.5, 0.9):
        stream = []
        for _ in range(300):
            if stream and rng.random() < 0.4:  # a perturbed earlier one: many pairs near the threshold
                words = rng.choice(stream).split()
                for _ in range(rng.randint(0, 3)):
                    words.insert(rng.randint(0, len(words)), rng.choice(WORDS))
                if len(words) > 2 and rng.random() < 0.5:
                    words.pop(rng.randrange(len(words)))
                stream.append(" ".join(words))
            else:
                stream.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))))
        assert indexed_keep(stream, threshold) == brute_force_keep(stream, threshold)


def test_empty_text_is_never_a_duplicate():
    index = NearDuplicateIndex()
    index.add("!!!")
    assert not index.is_near_duplicate("???")


def test_bit_parallel_lcs_equals_the_table():
    rng = random.Random(1)
    for _ in range(3000):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]  # past 64 tokens: big-integer rows
        b = [rng.choice("abcdef") for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == lcs_length_table(a, b) == lcs_length(b, a)


def test_best_match_finds_the_best_and_rejecting_needs_only_one():
    index = NearDuplicateIndex()
    for text in ("give me three tips for sleeping better tonight", "give me three tips for sleeping better"):
        index.add(text)
    score, which = index.best_match("give me three tips for sleeping better")
    assert which == 1 and score == 1.0
    assert index.is_near_duplicate("give me three good tips for sleeping better")


def test_one_long_instruction_with_thousands_of_new_words_is_indexed():
    index = NearDuplicateIndex()
    long_text = " ".join(f"word{i}" for i in range(3000))
    index.add(long_text)
    assert index.is_near_duplicate(long_text) and not index.is_near_duplicate("something else entirely")
