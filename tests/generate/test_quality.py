"""`privtune filter`: a local judge rates every example 1-5; the dataset keeps those at or above min_score,
split for split and row for row, with the score distribution and the dropped examples on record; failed
ratings resume without asking again for those already rated; a remote judge is refused before any request."""

import json

import pyarrow.parquet as pq
import pytest

from privtune.data import prep
from privtune.endpoint import Endpoint
from privtune.errors import PrivtuneError
from privtune.generate import quality
from tests.conftest import train_config
from tests.fake_judge import FakeRater, _is_json

SPLITS = ("train", "validation", "test")


@pytest.fixture()
def mixed_dataset(tmp_path, tiny_model, workspace):
    """40 examples: 24 with a JSON answer, 12 with prose, 4 the rater cannot score."""
    rows = [{"instruction": f"Classify ticket {i}.", "input": "", "output":
             json.dumps({"category": "bug"}) if i % 10 < 6 else "It is a bug ???" if i % 10 == 9 else "A bug, I think."}
            for i in range(40)]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    artifact, _ = prep.run([path], str(tiny_model), prep.PrepConfig(), workspace)
    return artifact


def split_rows(folder, split):
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def test_keeps_examples_rated_at_least_min_score_with_the_distribution(mixed_dataset, workspace):
    with FakeRater() as rater:
        endpoint = Endpoint(rater.url, "rater-1", url_flag="--judge-url")
        result, reused = quality.run(mixed_dataset.id, endpoint, quality.FilterConfig(min_score=3), workspace)
        assert rater.requests == 40 and not reused
        again, reused = quality.run(mixed_dataset.id, endpoint, quality.FilterConfig(min_score=3), workspace)
        assert reused and again.path == result.path and rater.requests == 40
    metrics = result.manifest["metrics"]
    assert metrics["score_distribution"] == {"1": 0, "2": 12, "3": 0, "4": 0, "5": 24, "unparsed": 4}
    assert metrics["dropped"] == {"below_min_score": 12, "unparsed": 4} and metrics["kept"] == 24
    assert result.manifest["parents"] == [mixed_dataset.id] and result.manifest["examples"] == "sft"
    for split in SPLITS:
        parent, kept = split_rows(mixed_dataset.path, split), split_rows(result.path, split)
        assert kept == [row for row in parent if _is_json(row["messages"][-1]["content"])]  # order kept
        assert pq.read_table(result.path / "tokenized" / f"{split}.parquet").num_rows == len(kept)
        assert metrics["splits"][split] == len(kept)
    dropped = [json.loads(line) for line in (result.path / "dropped.jsonl").read_text().splitlines()]
    assert len(dropped) == 16 and {d["score"] for d in dropped} == {2, None}
    assert all(d["reason"] for d in dropped) and not any(_is_json(d["example"]["messages"][-1]["content"])
                                                         for d in dropped)


def test_the_filtered_dataset_trains(mixed_dataset, workspace, tiny_model):
    from privtune.train import stage as train

    with FakeRater() as rater:
        endpoint = Endpoint(rater.url, "rater-1", url_flag="--judge-url")
        result, _ = quality.run(mixed_dataset.id, endpoint, quality.FilterConfig(min_score=5), workspace)
    model, _ = train.run(result.id, str(tiny_model), train_config(max_steps=1), workspace)
    assert result.id in model.manifest["parents"] and model.manifest["metrics"]["steps"] == 1


def test_failed_ratings_are_asked_again_and_only_they(mixed_dataset, workspace):
    with FakeRater() as rater:
        rater.fail = {3, 4, 5}
        endpoint = Endpoint(rater.url, "rater-1", max_retries=0, url_flag="--judge-url")
        config = quality.FilterConfig(concurrency=1)
        with pytest.raises(PrivtuneError, match="3 of 40 rating requests failed") as error:
            quality.run(mixed_dataset.id, endpoint, config, workspace)
        assert "same command again" in error.value.hint
        result, _ = quality.run(mixed_dataset.id, endpoint, config, workspace)
        assert rater.requests == 43  # the 3 that failed, asked again; none of the 37 rated
    assert result.manifest["metrics"]["kept"] == 24
    ratings = (result.path / quality.RATINGS).read_text().splitlines()
    assert len(ratings) == 40 and len({(json.loads(r)["split"], json.loads(r)["row"]) for r in ratings}) == 40


def test_a_remote_judge_is_refused_before_anything_is_sent(mixed_dataset, workspace, cli):
    code, output = cli("filter", "--data", mixed_dataset.id, "--judge-url", "http://203.0.113.9/v1",
                       "--judge-model", "judge", "--workspace", workspace.root)
    assert code == 2 and "--allow-remote" in output
    code, output = cli("filter", "--data", mixed_dataset.id, "--workspace", workspace.root)
    assert code == 2 and "--judge-url" in output
    code, output = cli("filter", "--data", mixed_dataset.id, "--judge-url", "http://127.0.0.1:9/v1",
                       "--judge-model", "judge", "--min-score", "6", "--workspace", workspace.root)
    assert code == 2 and "min_score" in output


def test_the_cli_prints_the_distribution(mixed_dataset, workspace, cli):
    with FakeRater() as rater:
        code, output = cli("filter", "--data", mixed_dataset.id, "--judge-url", rater.url, "--judge-model", "rater-1",
                           "--min-score", "5", "--workspace", workspace.root)
    assert code == 0, output
    assert "0 / 12 / 0 / 0 / 24 (4)" in output and "24 (0.60" in output
