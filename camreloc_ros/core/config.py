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
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml


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
