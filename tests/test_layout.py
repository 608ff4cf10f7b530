"""Stages meet only through artifacts: no stage's module imports another stage's. Shared pieces (the
data library, models, rouge, artifacts, pipeline) are imported by any; only the CLI and
privtune.pipeline chain stages."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "privtune"
STAGES = {"privtune.data.prep": "prep", "privtune.generate": "generate", "privtune.train": "train",
          "privtune.eval": "eval", "privtune.serve": "serve", "privtune.export": "export"}


def stage_of(module: str) -> str | None:
    return next((stage for prefix, stage in STAGES.items() if module == prefix or module.startswith(prefix + ".")),
                None)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("privtune"):
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("privtune")}
    return found


def test_no_stage_imports_another_stage():
    crossings = []
    for path in PACKAGE.rglob("*.py"):
        module = "privtune." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        own = stage_of(module)
        if own is None:
            continue
        crossings += [f"{module} -> {target}" for target in imports(path)
                      if stage_of(target) not in (None, own) or target.startswith("privtune.pipeline")]
    assert crossings == []  # privtune.pipeline runs one stage for another: only the CLI calls it


def test_the_check_sees_a_crossing(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from privtune.data import prep\nfrom privtune.eval.stage import run\n")
    assert {stage_of(m) for m in imports(probe)} >= {"prep", "eval"}
