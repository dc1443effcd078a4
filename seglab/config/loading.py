"""Reading a config: YAML file, `key.path=value` overrides, validation with one line per problem."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from seglab.config.schema import Config, DataConfig, plugin_sections
from seglab.errors import ConfigError, SeglabError
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


def _model_at(model: type[BaseModel], path: tuple):
    """The schema section (a model class) that `path` points at, plug-in sections included, or None."""
    current: Any = model
    for part in path:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            current = plugin_sections(current).get(part)
            continue
        current = field.annotation
        if getattr(current, "__origin__", None) is not None or not isinstance(current, type):
            # Optional[Section] and friends: take the BaseModel argument if there is one.
            args = [a for a in getattr(current, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
            current = args[0] if args else None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unknown_key(loc: tuple, key: str, raw: dict) -> str:
    """Why a key is unknown, with the closest name or the plug-in section it belongs to."""
    parent = _model_at(Config, loc[:-1])
    sections = plugin_sections(parent) if parent is not None else {}
    if loc[-1] in sections:
        kind = parent.plugins().kind
        return f"{key}: options of the {kind} {loc[-1]}, read only when {parent.WHERE} is {loc[-1]} (a section of another {kind} is refused)"
    owners = [name for name, options in sections.items() if loc[-1] in options.model_fields]
    if owners:
        held = raw
        for part in loc[:-1]:
            held = held.get(part, {}) if isinstance(held, dict) else {}
        active = held.get(parent.PLUGIN, parent.model_fields[parent.PLUGIN].default) if isinstance(held, dict) else None
        owners = [active] if active in owners else owners
        where = ".".join(str(p) for p in loc[:-1])
        places = ", ".join(".".join(p for p in (where, name, str(loc[-1])) if p) for name in owners)
        return f"{key}: unknown key; it is an option of the {' or '.join(owners)} {parent.plugins().kind} now: {places}"
    fields = list(parent.model_fields) if parent is not None else []
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
    return f"{key}: unknown key" + (f"; did you mean {close[0]!r}?" if close else "")


def _format_validation_error(err: ValidationError, source: str, raw: dict) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: {_unknown_key(loc, key, raw)}")
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
        raise ConfigError(_format_validation_error(e, source, raw)) from None
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


def load_config(path: str | Path, overrides: list[str] = (), saved: bool = False) -> Config:
    """Read a YAML config, apply `key.path=value` overrides, validate. `saved`: a config seglab
    wrote (RUN/config.yaml), which an older seglab may have written in older keys: they are
    read in today's (`migrate_saved`), with one note."""
    raw = read_yaml(path)
    if saved:
        raw, moved = migrate_saved(raw)
        if moved:
            note_migration(Path(path), moved)
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(raw, keys, value)
    return config_from_dict(raw, source=str(path))


def saved_config(path: str | Path) -> bool:
    """Whether a config file is one seglab wrote: a run's config.yaml (beside labels.json) or
    a k-fold's (beside kfold_split.json)."""
    path = Path(path)
    return path.name == "config.yaml" and any((path.parent / f).is_file() for f in ("labels.json", "kfold_split.json"))


def migrate_saved(raw: dict) -> tuple[dict, list[str]]:
    """A saved config in today's keys, and what changed. Options that moved from the core
    schema into a plug-in's section (`data.mask_dir` -> `data.labelmap.mask_dir`) move there
    when the configured plug-in declares them; those of another plug-in (every key was
    saved, read or not) and another task's section are dropped: they were never read."""
    moved: list[str] = []
    raw = _migrated(Config, dict(raw), "", moved)
    if isinstance(raw.get("data"), dict):
        raw["data"] = _migrated(DataConfig, dict(raw["data"]), "data.", moved)
    return raw, moved


def _migrated(model, section: dict, prefix: str, moved: list[str]) -> dict:
    sections = plugin_sections(model)
    try:
        active = model.plugins().key(str(section.get(model.PLUGIN, model.model_fields[model.PLUGIN].default)))
    except SeglabError:
        return section  # validation names the unknown plug-in
    for key in [k for k in section if k not in model.model_fields]:
        owners = [name for name, options in sections.items() if key in options.model_fields]
        if key in sections and key != active or owners and active not in owners:
            section.pop(key)
            moved.append(f"{prefix}{key} dropped")
        elif owners:
            section[active] = {key: section.pop(key), **(section.get(active) or {})}
            moved.append(f"{prefix}{key} -> {prefix}{active}.{key}")
    return section


_NOTED: set = set()


def note_migration(path: Path, moved: list[str]) -> None:
    """One note per saved config read in today's keys (a process may load a run many times)."""
    key = str(path.resolve())
    if key in _NOTED:
        return
    _NOTED.add(key)
    kept = [m for m in moved if "->" in m]
    dropped = len(moved) - len(kept)
    logging.getLogger("seglab").warning(
        f"{path}: written by an older seglab; read with today's keys: {', '.join(kept) or 'nothing moved'}"
        + (f" ({dropped} option(s) of other layouts or tasks dropped: they were never read)" if dropped else ""))


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
