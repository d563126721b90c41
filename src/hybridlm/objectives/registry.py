"""The registry that names objectives, and the option keys their Options define together.

Objectives register with `@register` (or `register(MyObjective)` from anywhere, e.g. a test), or
from another package through the `hybridlm.objectives` entry-point group; `hlm train`'s flags and
config keys are then made from every registered objective's Options.
"""

from __future__ import annotations

from dataclasses import fields
from importlib.metadata import entry_points

from hybridlm.errors import UserError
from hybridlm.objectives.base import Objective, Options, option_default

OBJECTIVES: dict[str, type[Objective]] = {}
_plugins_loaded = False


def register(cls: type[Objective]) -> type[Objective]:
    """Make `cls` available under `cls.name` (as --objective, in configs and in saved runs)."""
    if not (isinstance(cls, type) and issubclass(cls, Objective)) or cls.name == Objective.name:
        raise TypeError("register an Objective subclass with its own `name`")
    if not (isinstance(cls.Options, type) and issubclass(cls.Options, Options)):
        raise TypeError(f"{cls.__name__}.Options must be an Options dataclass")
    known = _registered_fields()  # (not option_fields: a plugin registering itself loads no plugins)
    for f in fields(cls.Options):  # a key shared by two objectives is one key: one type, one default
        other = known.get(f.name)
        if other is not None and (option_default(other), other.type) != (option_default(f), f.type):
            raise TypeError(f"option {f.name!r} of {cls.__name__} differs from the registered one (default or type)")
    OBJECTIVES[cls.name] = cls
    return cls


def _load_plugins() -> None:
    """Objectives other packages declare under the `hybridlm.objectives` entry-point group."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for point in entry_points(group="hybridlm.objectives"):
        register(point.load())


def objective_class(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        _load_plugins()
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r} (choose one of: {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name]


def option_fields() -> dict:
    """Every option key of the registered objectives -> its dataclass field (first definition)."""
    _load_plugins()  # a plugin's options are flags and config keys too
    return _registered_fields()


def _registered_fields() -> dict:
    out = {}
    for cls in OBJECTIVES.values():
        for f in fields(cls.Options):
            out.setdefault(f.name, f)
    return out


def option_owners(key: str) -> list[str]:
    return [name for name, cls in OBJECTIVES.items() if key in {f.name for f in fields(cls.Options)}]


def build_objective(cfg, vocab_size: int, data_dir=None) -> Objective:
    """The objective a TrainConfig names, with its options."""
    return objective_class(cfg.objective).from_config(cfg, vocab_size, data_dir)
