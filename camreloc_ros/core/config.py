# Copyright 2026 camreloc_ros authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Nested configuration dicts: defaults merged with overrides, unknown keys rejected.

A typo in a key silently falling back to a default wastes a training run, so every merge
checks keys against the defaults.
"""

import copy
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml


# The inference runtimes and CNN precisions, by name: one constant that training (whose
# ``train.precision`` schema may not import inference/), inference, the tools and the node
# parameters all read, so a new precision cannot be accepted by one and refused by another.
# Which runtime and device run which precision: core/inference/precision.py. int8 is an
# inference precision only (a quantized ONNX export), so training takes the first three.
RUNTIMES = ('auto', 'torch', 'onnx')
PRECISIONS = ('fp32', 'fp16', 'bf16', 'int8')
TRAIN_PRECISIONS = ('fp32', 'fp16', 'bf16')


class ConfigError(ValueError):
    """A configuration key or value that does not fit the defaults."""


def merge_conf(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None,
               where: str = '') -> dict:
    """Return a deep copy of ``defaults`` updated with ``overrides``; unknown keys raise."""
    out = copy.deepcopy(dict(defaults))
    for key, value in (overrides or {}).items():
        name = f'{where}{key}'
        if key not in out:
            valid = ', '.join(sorted(out)) or '(none)'
            raise ConfigError(f'unknown config key {name!r}; valid keys here: {valid}')
        if isinstance(out[key], Mapping) and out[key] and isinstance(value, Mapping):
            out[key] = merge_conf(out[key], value, f'{name}.')
        else:
            out[key] = copy.deepcopy(value)
    return out


def deep_update(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict:
    """Nested update without key checks (the result goes through :func:`merge_conf` later)."""
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(items: Iterable[str]) -> dict:
    """Turn ``['train.lr=1e-4', 'model.head.name=lstm']`` into a nested dict (YAML values)."""
    out: dict = {}
    for item in items:
        if '=' not in item:
            raise ConfigError(f'override {item!r} is not of the form key=value')
        key, raw = item.split('=', 1)
        if not key:
            raise ConfigError(f'override {item!r} has an empty key')
        value = yaml.safe_load(raw) if raw != '' else ''
        node = out
        parts = key.split('.')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f'override {item!r} conflicts with another override')
        node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with an error that names the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f'config file {path} does not exist') from None
    except yaml.YAMLError as exc:
        raise ConfigError(f'config file {path} is not valid YAML: {exc}') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'config file {path} must hold a mapping, got {type(data).__name__}')
    return data


# ---------------------------------------------------------------------------- value checks

class Spec:
    """Allowed values of one config key; ``check`` returns why a value is wrong, or None."""

    def __init__(self, kind: str, lo: float | None = None, hi: float | None = None,
                 choices: Iterable | None = None, optional: bool = False,
                 lo_open: bool = False, hi_open: bool = False, length: int | None = None,
                 label: str | None = None):
        self.kind, self.lo, self.hi, self.label = kind, lo, hi, label
        self.choices = tuple(choices) if choices is not None else None
        self.optional, self.lo_open, self.hi_open, self.length = \
            optional, lo_open, hi_open, length

    def describe(self) -> str:
        """Human wording of what is allowed, e.g. ``an integer >= 1``."""
        if self.choices is not None:
            text = 'one of ' + ', '.join(map(str, self.choices))
        else:
            text = {'int': 'an integer', 'float': 'a finite number', 'bool': 'true or false',
                    'str': 'a string'}[self.kind]
            if self.length is not None:
                text = f'a list of {self.length} {"integers" if self.kind == "int" else "numbers"}'
            if self.lo is not None:
                text += f' {">" if self.lo_open else ">="} {self.lo:g}'
            if self.hi is not None:
                text += f'{" and" if self.lo is not None else ""} ' \
                        f'{"<" if self.hi_open else "<="} {self.hi:g}'
        return text + (' (or null)' if self.optional else '')

    def _scalar_ok(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.kind == 'bool':
            return isinstance(value, bool)
        if self.kind == 'str':
            return isinstance(value, str)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == 'int' and not isinstance(value, int):
            return False
        if not math.isfinite(float(value)):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def check(self, value: Any) -> bool:
        """Whether ``value`` is allowed."""
        if value is None:
            return self.optional
        if self.length is not None:
            return (isinstance(value, (list, tuple)) and len(value) == self.length
                    and all(self._scalar_ok(v) for v in value))
        return self._scalar_ok(value)


def check_conf(conf: Mapping[str, Any], schema: Mapping[str, Any], where: str = '') -> None:
    """Check every key of ``conf`` that ``schema`` describes; the error names the key.

    ``schema`` mirrors the defaults: nested dicts, with a :class:`Spec` per leaf. Booleans
    are never numbers, and floats are never integers.
    """
    for key, spec in schema.items():
        name = f'{where}{key}'
        if key not in conf:
            continue
        value = conf[key]
        if isinstance(spec, Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f'config key {name!r} must be a mapping, got {value!r}')
            check_conf(value, spec, f'{name}.')
        elif not spec.check(value):
            if spec.label and spec.choices is not None:   # a name: say which ones exist
                raise ConfigError(f'config key {name!r}: unknown {spec.label} {value!r}; '
                                  f'valid: {", ".join(map(str, spec.choices))}')
            raise ConfigError(f'config key {name!r} must be {spec.describe()}, got {value!r}')
