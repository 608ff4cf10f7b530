"""Versioned artifacts on disk: a workspace of directories, each with a manifest.json.

An artifact's id is a short hash of what produced it (stage, parents, input hashes, config), so
running the same stage on the same inputs finds the earlier result instead of redoing it. A stage
writes into `<workspace>/.staging/<kind>-<id>/` and renames it into place only when complete, so a
killed stage never leaves anything that looks finished; a stage that can resume (train, generate)
picks its staging directory up again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from privtune.errors import PrivtuneError

MANIFEST = "manifest.json"
_VERSIONED = ("privtune", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes")


def default_workspace() -> Path:
    return Path(os.environ.get("PRIVTUNE_HOME") or "privtune-runs")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def package_versions() -> dict[str, str]:
    """Versions from package metadata: cheap, imports nothing heavy."""
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file so readers see either the old content or the new, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(tmp, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PrivtuneError(f"cannot write: {exc.strerror or exc}", source=str(path),
                            hint="check free disk space and that the workspace is writable") from None


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@dataclass
class Artifact:
    """A finished artifact directory and its manifest."""

    path: Path
    manifest: dict

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @classmethod
    def load(cls, path: Path) -> "Artifact":
        manifest_path = Path(path) / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PrivtuneError("not a privtune artifact (no manifest.json)", source=str(path)) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DamagedArtifact(str(exc), source=str(manifest_path)) from None
        if not isinstance(manifest, dict) or not all(isinstance(manifest.get(k), str) for k in ("kind", "id")):
            raise DamagedArtifact("no 'kind' and 'id'", source=str(manifest_path))
        return cls(Path(path), manifest)


class Result(NamedTuple):
    """What every stage's `run` returns: its artifact, and whether an identical one was reused (found in
    the workspace) rather than built."""

    artifact: Artifact
    reused: bool


class DamagedArtifact(PrivtuneError):
    """An artifact folder whose manifest.json cannot be read: reported, never silently skipped or reused."""

    def __init__(self, problem: str, source: str):
        super().__init__(f"damaged artifact: its manifest cannot be read ({problem})", source=source,
                         hint="re-run the stage that made it with --force to rebuild it, or `privtune gc` to "
                              "remove it")


class Staging:
    """A stage's work in progress; `finish` turns it into an artifact atomically."""

    def __init__(self, workspace: "Workspace", kind: str, artifact_id: str):
        self.workspace = workspace
        self.kind = kind
        self.id = artifact_id
        self.path = workspace.root / ".staging" / f"{kind}-{artifact_id}"
        self.started = time.time()

    def finish(self, manifest: dict) -> Artifact:
        manifest = {
            "kind": self.kind, "id": self.id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": package_versions(),
            **manifest,
            "timings": {**manifest.get("timings", {}), "total_s": round(time.time() - self.started, 3)},
            "status": "complete",
        }
        write_json_atomic(self.path / MANIFEST, manifest)
        final = self.workspace.root / f"{self.kind}-{self.id}"
        trash = final.with_name(f".trash-{final.name}-{os.getpid()}")
        try:
            if final.exists():  # --force: the old one is replaced, never merged
                os.rename(final, trash)
            try:
                os.rename(self.path, final)
            except OSError:
                if trash.exists():
                    os.rename(trash, final)  # the old artifact stays if the new one cannot take its place
                raise
        except OSError as exc:
            raise PrivtuneError(f"cannot move the finished artifact into place: {exc.strerror or exc}",
                                source=str(final)) from None
        shutil.rmtree(trash, ignore_errors=True)
        return Artifact(final, manifest)


class Workspace:
    """The directory that holds every artifact: `--workspace`, `$PRIVTUNE_HOME` or ./privtune-runs."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root else default_workspace()

    def get(self, kind: str, artifact_id: str) -> Artifact | None:
        """The finished artifact, or None; a damaged one is an error (a stage run with --force does not
        look, and its `Staging.finish` replaces the folder)."""
        path = self.root / f"{kind}-{artifact_id}"
        return Artifact.load(path) if (path / MANIFEST).is_file() else None

    def stage(self, kind: str, artifact_id: str, *, fresh: bool = True) -> Staging:
        """Open the staging directory; `fresh` discards an earlier interrupted attempt."""
        staging = Staging(self, kind, artifact_id)
        try:
            if fresh and staging.path.exists():
                shutil.rmtree(staging.path)
            staging.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PrivtuneError(f"cannot create the workspace: {exc.strerror or exc}", source=str(staging.path),
                                hint="pass --workspace DIR or set PRIVTUNE_HOME to a writable directory") from None
        return staging

    def artifacts(self) -> list[Artifact]:
        """Finished artifacts, newest first (damaged ones are in `damaged()`)."""
        return self.scan()[0]

    def damaged(self) -> list[tuple[Path, DamagedArtifact]]:
        """Artifact folders whose manifest cannot be read, with the problem."""
        return self.scan()[1]

    def scan(self) -> tuple[list[Artifact], list[tuple[Path, DamagedArtifact]]]:
        """Finished artifacts (newest first) and damaged ones, in one pass over the workspace."""
        found, damaged = [], []
        if self.root.is_dir():
            for path in self.root.iterdir():
                if path.name.startswith(".") or not (path / MANIFEST).is_file():
                    continue
                try:
                    found.append(Artifact.load(path))
                except DamagedArtifact as exc:
                    damaged.append((path, exc))
        return sorted(found, key=lambda a: str(a.manifest.get("created", "")), reverse=True), damaged

    def leftovers(self, staging: bool = False) -> list[Path]:
        """What `privtune gc` removes: damaged artifacts, folders a replaced artifact left behind, and
        with `staging` the work of interrupted stages (which a re-run would otherwise resume)."""
        if not self.root.is_dir():
            return []
        paths = [path for path, _ in self.damaged()] + sorted(self.root.glob(".trash-*"))
        if staging:
            paths += sorted((self.root / ".staging").glob("*"))
        return paths

    def resolve(self, ref: str, kind: str | None = None) -> Artifact | None:
        """An artifact by path, full id, `kind-id` name, or unique id prefix; None if `ref` is none of these."""
        path = Path(ref)
        if (path / MANIFEST).is_file():
            artifact = Artifact.load(path)
        else:
            found, damaged = self.scan()
            matches = [a for a in found if ref in (a.id, a.path.name) or (len(ref) >= 4 and a.id.startswith(ref))]
            broken = [exc for path, exc in damaged if ref == path.name or (len(ref) >= 4 and
                                                                           path.name.split("-", 1)[-1].startswith(ref))]
            if broken and not matches:
                raise broken[0]
            if len(matches) > 1:
                raise PrivtuneError(f"'{ref}' matches {len(matches)} artifacts; give more of the id",
                                    hint=", ".join(a.path.name for a in matches))
            if not matches:
                return None
            artifact = matches[0]
        if kind and artifact.kind != kind:
            raise PrivtuneError(f"'{ref}' is a {artifact.kind} artifact, expected a {kind}")
        return artifact


def input_record(paths: Iterable[Path]) -> list[dict]:
    """Path and content hash of each input file, for the manifest and the artifact id."""
    return [{"path": str(p), "sha256": file_sha256(Path(p))} for p in paths]
