"""Recipes: plain YAML files loaded into typed, validated pydantic models.

Every stage keeps its own config model next to its code. This module only knows how to turn a
YAML mapping (plus `--set key=value` overrides) into such a model, and how to say precisely
where a bad value is: file, line, dotted key, and what was expected. Unknown keys are errors,
never silently ignored.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from privtune.errors import PrivtuneError

T = TypeVar("T")
SHIPPED_RECIPES = Path(__file__).resolve().parent / "recipes"
"""Recipes that ship inside the package, so `--recipe lora` works wherever privtune is installed."""
RECIPE_DIRS = (Path("recipes"), SHIPPED_RECIPES)
"""Where a recipe name is looked up: the project's own ./recipes first, then the shipped ones."""


class ConfigValueError(ValueError):
    """Raised by a config's cross-field check: `key` is the field at fault."""

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


class Config(BaseModel):
    """Base of every stage's config: unknown keys are errors, non-finite numbers are refused, and the
    docstring under each field is its description (shown by `privtune validate --keys`).

    A cross-field check is a `@model_validator(mode="after")` that raises `ConfigValueError(key, ...)`,
    so the error still names the key at fault."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)


def _split_commas(value: Any) -> Any:
    """`--set lora.target_modules=q_proj,v_proj` gives one string; a list field takes it as items."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


CommaList = Annotated[list[str], BeforeValidator(_split_commas)]
"""A list of strings that a `--set` may give as `a,b,c`."""

_WORDING = {  # pydantic's error types in the words privtune's errors have always used
    "int": ("int_parsing", "int_type", "int_from_float"),
    "float": ("float_parsing", "float_type"),
    "bool": ("bool_parsing", "bool_type"),
    "str": ("string_type",),
    "a list": ("list_type",),
    "a mapping": ("dict_type", "model_type", "model_attributes_type"),
}


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a mapping"
    if get_origin(tp) is Annotated:
        return _type_name(get_args(tp)[0])
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _dotted(loc: tuple) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def _config_error(cls: type[BaseModel], error: dict) -> ConfigValueError:
    """One pydantic error as (dotted key, message in privtune's words)."""
    key, kind, value = _dotted(error["loc"]), error["type"], error.get("input")
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigValueError):  # a validator's check: its own key, under the model's path
        loc = error["loc"]
        path = loc[:-1] if loc[-1:] == (cause.key,) else loc  # a field validator's loc already ends in its key
        return ConfigValueError(".".join(filter(None, (_dotted(path), cause.key))), cause.message)
    if kind == "extra_forbidden":
        owner = cls
        for part in error["loc"][:-1]:
            owner = owner.model_fields[part].annotation if isinstance(part, str) else owner
        close = difflib.get_close_matches(str(error["loc"][-1]), owner.model_fields, n=1)
        guess = f"did you mean '{close[0]}'? " if close else ""
        return ConfigValueError(key, f"unknown key; {guess}expected one of: {', '.join(owner.model_fields)}")
    if kind == "finite_number":
        return ConfigValueError(key, f"expected a finite number, got {value!r}")
    if kind == "literal_error":
        return ConfigValueError(key, f"expected one of {error['ctx']['expected']}, got {value!r}")
    for name, kinds in _WORDING.items():
        if kind in kinds:
            return ConfigValueError(key, f"expected {name}, got {value!r}")
    return ConfigValueError(key, f"{error['msg']}, got {value!r}")


def _build(cls: type[T], data: dict) -> T:
    """`cls` from `data`, or ConfigErrors with every key's problem (cross-field checks run once every
    field is well-typed, as pydantic runs "after" validators)."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigErrors([_config_error(cls, e) for e in exc.errors()]) from None


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


def field_docs(cls: type[BaseModel]) -> dict[str, tuple[str, str, str]]:
    """Every key of a config, nested ones dotted: (type, default, its description)."""
    rows = {}
    for name, info in cls.model_fields.items():
        tp = info.annotation
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            rows.update({f"{name}.{key}": row for key, row in field_docs(tp).items()})
            continue
        default = info.get_default(call_default_factory=True)
        rows[name] = (_type_name(tp), repr(default), " ".join((info.description or "").split()))
    return rows


def load_recipe(cls: type[T], recipe: str, overrides: list[str] | None = None) -> tuple[T, Path]:
    """Load a recipe by name or path into `cls`, applying `--set` overrides."""
    path = find_recipe(recipe)
    data, lines = read_yaml(path)
    data = apply_overrides(data, list(overrides or []), lines)
    return build_config(cls, data, source=str(path), lines=lines), path


def config_dict(config: BaseModel) -> dict:
    """A config as plain data: for manifests, artifact ids and `validate`'s resolved recipe."""
    return config.model_dump()
