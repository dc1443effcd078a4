"""Reading a config: YAML file, `key.path=value` overrides, validation with one line per problem."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from seglab.config.schema import Config
from seglab.errors import ConfigError
from seglab.io import UniqueKeyLoader


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value); the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text[:80]!r}: value is not valid YAML ({getattr(e, 'problem', None) or e})") from None
    except (ValueError, RecursionError) as e:  # a number of thousands of digits, nesting too deep
        raise ConfigError(f"override {text[:80]!r}: unusable value ({str(e).split(';')[0][:100] or type(e).__name__})") from None
    return key.split("."), value


def apply_override(raw: dict, path: list[str], value: Any) -> None:
    node: Any = raw
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, path[: i + 1])]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    last = path[-1]
    if isinstance(node, list):
        node[_list_index(node, last, path)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {'.'.join(path)}: {'.'.join(path[:-1])} is not a section")


def _list_index(node: list, part: str, path: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {'.'.join(path)}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the schema section that `loc` (without its last item) points into."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = field.annotation
        if getattr(current, "__origin__", None) is not None or not isinstance(current, type):
            # Optional[Section] and friends: take the BaseModel argument if there is one.
            args = [a for a in getattr(current, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
            current = args[0] if args else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(Config, loc), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"{source}: {key}: unknown key{hint}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if "input" in e and e["type"] not in ("missing",) and loc:
                msg += f" (got {e['input']!r})"
            lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def config_from_dict(raw: dict, source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (ValueError, RecursionError) as e:  # a number of thousands of digits, nesting too deep
        raise ConfigError(f"{path}: unusable value ({str(e).split(';')[0][:100] or type(e).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply `key.path=value` overrides, validate."""
    raw = read_yaml(path)
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(raw, keys, value)
    return config_from_dict(raw, source=str(path))


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
