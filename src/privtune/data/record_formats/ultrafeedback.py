"""UltraFeedback-style rated completions: {"prompt" (or "instruction"), "completions": [{"response", "overall_score"
(or "score")}, ...]}; the best-rated answer is chosen, the worst rejected (as UltraFeedback binarized does with
the best; here the worst, so each pair has the widest margin)."""

from privtune.data.formats import Format, _fail, preference_pair, text_field


def rated(record, items):
    if not isinstance(items, list) or len(items) < 2:
        raise _fail(record, "completions", "expected a list of at least 2 rated completions")
    answers = []
    for index, item in enumerate(items):
        where = f"completions[{index}]"
        if not isinstance(item, dict):
            raise _fail(record, where, f"expected an object, got {type(item).__name__}")
        key = next((k for k in ("overall_score", "score", "rating") if k in item), None)
        score = item.get(key)
        if key is None or isinstance(score, bool) or not isinstance(score, (int, float)):
            raise _fail(record, f"{where}.{key or 'overall_score'}", "expected a numeric score")
        text_key = "response" if "response" in item else "text"
        answers.append((float(score), text_field(record, item, text_key, label=f"{where}.{text_key}")))
    return answers


def normalize(record, data):
    field = "prompt" if "prompt" in data else "instruction"
    prompt = [{"role": "user", "content": text_field(record, data, field), "train": False}]
    answers = rated(record, data.get("completions"))
    best, worst = max(answers, key=lambda a: a[0]), min(answers, key=lambda a: a[0])
    if best[0] == worst[0]:
        raise _fail(record, "completions", f"every completion has the same score ({best[0]:g}): no preference")
    turn = lambda text: [{"role": "assistant", "content": text, "train": True}]
    return preference_pair(record, prompt, turn(best[1]), turn(worst[1]), field="completions")


FORMAT = Format(name="ultrafeedback", keys=frozenset({"completions"}), normalize=normalize, examples="preference",
                order=13, description="prompt|instruction, completions: [{response, overall_score}] (UltraFeedback)")
