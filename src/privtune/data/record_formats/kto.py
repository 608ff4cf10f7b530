"""KTO's unpaired records: {"prompt", "completion", "label"}: one answer, marked desirable (true) or not."""

from privtune.data.formats import Format, _fail, answer_turns, prompt_turns


def normalize(record, data):
    label = data.get("label")
    if isinstance(label, str) and label.lower() in ("true", "false"):  # CSV cells are strings
        label = label.lower() == "true"
    if not isinstance(label, bool):
        raise _fail(record, "label", f"expected true or false, got {label!r}")
    return {"prompt": prompt_turns(record, data, "prompt"), "completion": answer_turns(record, data, "completion"),
            "label": label}


FORMAT = Format(name="kto", keys=frozenset({"prompt", "completion", "label"}), normalize=normalize,
                examples="unpaired", order=14, description="prompt, completion, label (KTO: unpaired, true/false)")
