"""eval of the real tuned SmolLM2 against its base: columns named after the models, intervals, a
paired test, and a tuned model that stops at its end of turn."""

import pytest

from privtune.eval import stage

pytestmark = pytest.mark.real_model


def test_real_eval_names_the_models_and_tests_the_gain(smol_tuned, real_workspace):
    config = stage.EvalConfig(max_new_tokens=24, limit=12, bootstrap=500)
    artifact, _ = stage.run(smol_tuned.id, config, real_workspace)
    metrics = artifact.manifest["metrics"]
    assert metrics["labels"] == {"tuned": f"tuned (model {smol_tuned.id[:8]})",
                                 "baseline": "base (SmolLM2-135M-Instruct.Q4_1)"}
    tuned, base = metrics["models"]["tuned"], metrics["models"]["baseline"]
    assert tuned["stopped_before_limit"] == 1.0 and tuned["loss"] < base["loss"]
    low, high = metrics["intervals"]["tuned"]["json_field_accuracy"]
    assert low <= tuned["json_field_accuracy"] <= high
    loss_test = metrics["paired"]["loss"]
    assert loss_test["difference"] < 0 and loss_test["significant"]
    report = (artifact.path / "report.md").read_text()
    assert "base (SmolLM2-135M-Instruct.Q4_1)" in report and f"tuned (model {smol_tuned.id[:8]})" in report
