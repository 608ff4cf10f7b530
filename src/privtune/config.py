"""Recipes: plain YAML files loaded into typed, validated dataclasses.

Every stage keeps its own config dataclass next to its code. This module only knows how to turn a
YAML mapping (plus `--set key=value` overrides) into such a dataclass, and how to say precisely
where a bad value is: file, line, dotted key, and what was expected. Unknown keys are errors,
never silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from privtune.errors import PrivtuneError

T = TypeVar("T")
SHIPPED_RECIPES = Path(__file__).resolve().parent / "recipes"
"""Recipes that ship inside the package, so `--recipe lora` works wherever privtune is installed."""
RECIPE_DIRS = (Path("recipes"), SHIPPED_RECIPES)
"""Where a recipe name is looked up: the project's own ./recipes first, then the shipped ones."""


class ConfigValueError(ValueError):
    """Raised by a config's `__post_init__`: `key` is the field at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


class ConfigErrors(ValueError):
    """Every problem found in one config, so the user fixes them in one go rather than one per run."""

    def __init__(self, errors: list[ConfigValueError]):
        super().__init__("; ".join(f"{e.key}: {e.message}" for e in errors))
        self.errors = errors


def _key_lines(node: yaml.Node, source: str, prefix: str = "") -> dict[str, int]:
    """The line of each dotted key; a key given twice in one mapping is an error, because YAML
    loaders keep the last one silently and the user's first value would vanish."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            line = key_node.start_mark.line + 1
            if key in lines:
                raise PrivtuneError(f"duplicate key (first given on line {lines[key]}); keep one",
                                    source=source, line=line, field=key)
            lines[key] = line
            lines.update(_key_lines(value_node, source, key + "."))
    return lines


def read_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    """The mapping in a YAML file and the line of each dotted key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except OSError as exc:
        raise PrivtuneError(f"cannot read recipe: {exc.strerror}", source=str(path)) from None
    except UnicodeDecodeError:
        raise PrivtuneError("recipe is not valid UTF-8", source=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PrivtuneError(f"invalid YAML: {getattr(exc, 'problem', exc)}", source=str(path),
                            line=mark.line + 1 if mark else None) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PrivtuneError("a recipe must be a mapping of key: value", source=str(path), line=1)
    return data, _key_lines(node, str(path)) if node is not None else {}


def list_recipes() -> dict[str, Path]:
    """Every recipe by name (`accelerate/fsdp` for a subfolder's); ./recipes shadows a shipped one."""
    found: dict[str, Path] = {}
    for folder in reversed(RECIPE_DIRS):
        if folder.is_dir():
            found.update({p.relative_to(folder).with_suffix("").as_posix(): p for p in folder.rglob("*.yaml")})
    return dict(sorted(found.items()))


def recipe_summary(path: Path) -> str:
    """A recipe's first comment line: what it is for."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def find_recipe(name_or_path: str) -> Path:
    """A recipe by path, or by name in ./recipes or the shipped recipes."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    known = list_recipes()
    if name_or_path in known:
        return known[name_or_path]
    raise PrivtuneError(f"no recipe named '{name_or_path}'", field="--recipe",
                        hint=f"use a path to a YAML file or one of: {', '.join(known) or '(none found)'} "
                             "(privtune recipes lists them)")


def apply_overrides(data: dict, overrides: list[str], lines: dict[str, int]) -> dict:
    """Apply `key=value` overrides (dotted keys for nested sections); values parse as YAML."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise PrivtuneError(f"expected key=value, got '{item}'", field="--set")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        target = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise PrivtuneError(f"'{part}' is not a section", field=key)
        target[parts[-1]] = value
        lines[key.strip()] = 0  # line 0 marks "from --set"
    return data


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except (ConfigValueError, ConfigErrors):
                errors.append(_type_name(option))
        raise ConfigValueError(key, f"expected {' or '.join(errors)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigValueError(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_type,) = get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigValueError(key, f"expected a list, got {value!r}")
        return [_coerce(item_type, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigValueError(key, f"expected a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigValueError(key, f"expected a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 2e-4 as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # YAML reads .nan and .inf as floats; no setting means them
                raise ConfigValueError(key, f"expected a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigValueError(key, f"expected {_type_name(tp)}, got {value!r}")


def _build(cls: type[T], data: dict, prefix: str = "") -> T:
    """`cls` from `data`, or ConfigErrors with every key's problem (the cross-field checks of
    `__post_init__` run once every field is well-typed)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs, errors = {}, []
    for key, value in data.items():
        if key not in fields:
            errors.append(ConfigValueError(prefix + str(key), f"unknown key; expected one of: {', '.join(fields)}"))
            continue
        try:
            kwargs[key] = _coerce(hints[key], value, prefix + key)
        except ConfigValueError as exc:
            errors.append(exc)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise ConfigErrors(errors)
    try:
        return cls(**kwargs)
    except ConfigValueError as exc:
        raise ConfigErrors([ConfigValueError(prefix + exc.key, exc.message)]) from None


def build_config(cls: type[T], data: dict, *, source: str, lines: dict[str, int] | None = None) -> T:
    """Build and validate `cls` from a mapping; errors name the source, line and dotted key, all of them."""
    lines = lines or {}
    try:
        return _build(cls, data)
    except ConfigErrors as exc:
        problems = []
        for error in exc.errors:
            line = lines.get(error.key) or lines.get(error.key.split("[")[0])
            origin = "--set" if line == 0 else source
            problems.append(PrivtuneError(error.message, source=origin, line=line or None, field=error.key))
        if len(problems) == 1:
            raise problems[0] from None
        problems.sort(key=lambda p: (p.source != source, p.line or 0))
        raise PrivtuneError(f"{len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems),
                            source=source) from None


def field_docs(cls: type) -> dict[str, tuple[str, str, str]]:
    """Every key of a config dataclass, nested ones dotted: (type, default, the docstring under it)."""
    import ast
    import inspect

    hints = typing.get_type_hints(cls)
    tree = ast.parse(inspect.getsource(cls).lstrip())
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            is_doc = isinstance(following, ast.Expr) and isinstance(getattr(following, "value", None), ast.Constant)
            docs[node.target.id] = " ".join(following.value.value.split()) if is_doc else ""
    rows = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.update({f"{f.name}.{key}": row for key, row in field_docs(tp).items()})
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows[f.name] = (_type_name(tp), repr(default), docs.get(f.name, ""))
    return rows

def load_recipe(cls: type[T], recipe: str, overrides: list[str] | None = None) -> tuple[T, Path]:
    """Load a recipe by name or path into `cls`, applying `--set` overrides."""
    path = find_recipe(recipe)
    data, lines = read_yaml(path)
    data = apply_overrides(data, list(overrides or []), lines)
    return build_config(cls, data, source=str(path), lines=lines), path


def config_dict(config: Any) -> dict:
    return dataclasses.asdict(config)
