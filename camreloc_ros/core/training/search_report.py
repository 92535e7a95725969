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

"""Reports of ``camreloc search``: the results table, JSON and Optuna's own plots.

The study driver (:mod:`camreloc_ros.tools.search`) only runs trials; this module reads a
study back (optuna, imported only here and lazily) and is part of training's stage because a
study is a set of training runs: no tool imports another tool.
"""

import json
import logging
import math
from pathlib import Path
import time
import warnings

from camreloc_ros.core.io import atomic_output, atomic_write_text

logger = logging.getLogger('camreloc_ros')


def _optuna():
    import optuna   # imported here: only this tool needs it
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def shown_url(url: str) -> str:
    """Return the URL without its password, for logs and result files."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:   # noqa: BLE001 - an unparsable URL is refused later, with its reason
        return url.split('@')[-1]


def _counts(study) -> dict:
    optuna = _optuna()
    counts = {s.name: 0 for s in optuna.trial.TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] += 1
    return counts


def override_value(value) -> str:
    """Format a value as a ``key=value`` override that YAML reads back as the same value.

    YAML 1.1 reads ``1e-05`` as a string: floats get a decimal point in the mantissa.
    """
    text = json.dumps(value)
    if isinstance(value, float) and 'e' in text:
        mantissa, exponent = text.split('e')
        if '.' not in mantissa:
            mantissa += '.0'
        text = f'{mantissa}e{"" if exponent[0] in "+-" else "+"}{exponent}'
    return text


def _row_order(trial) -> tuple:
    # complete trials by value, then pruned ones (longest-lived first): a pruned value is an
    # early-epoch score, not comparable to a finished one
    done = trial.state.name == 'COMPLETE'
    value = trial.value if trial.value is not None else math.inf
    return (0 if done else 1, 0 if done else -int(trial.user_attrs.get('epochs', 0)), value)


def trial_records(study) -> list[dict]:
    """Every trial of the study as a plain record (results.json)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({
            'trial': t.number, 'state': t.state.name, 'value': t.value,
            'epochs': t.user_attrs.get('epochs'),
            'val_median_pos': t.user_attrs.get('val_median_pos'),
            'val_median_rot': t.user_attrs.get('val_median_rot'),
            'params': dict(t.params), 'worker': t.user_attrs.get('worker'),
            'start': t.datetime_start.isoformat() if t.datetime_start else None,
            'seconds': (t.duration.total_seconds() if t.duration else None)})
    return rows


def format_results(study, plots: dict) -> str:
    """Markdown: counts, best trial, table of COMPLETE/PRUNED trials sorted by value, plots."""
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state.name in ('COMPLETE', 'PRUNED')]
    trials.sort(key=_row_order)
    counts = _counts(study)
    keys = sorted({k for t in trials for k in t.params})
    lines = [f'# Search {study.study_name!r}', '',
             f'{counts["COMPLETE"]} complete, {counts["PRUNED"]} pruned, {counts["FAIL"]} failed, '
             f'{counts["RUNNING"]} running. Score: validation median position (m) + median '
             'orientation (deg) / 10, lower is better; a pruned trial shows its score at the '
             'epoch it was stopped.', '']
    done = [t for t in trials if t.state.name == 'COMPLETE']
    if done:
        best = min(done, key=lambda t: t.value)
        args = ' '.join(f'{k}={override_value(v)}' for k, v in sorted(best.params.items()))
        lines += [f'Best: trial {best.number}, score {best.value:.4f}. Train it with:', '',
                  f'    camreloc train ... {args}', '']
    head = ('| rank | trial | state | epochs | score | median pos (m) | median rot (deg) | '
            + ' | '.join(keys) + ' |')
    lines += [head, '|' + '---|' * (head.count('|') - 1)]
    for rank, t in enumerate(trials, 1):
        vals = [f'{v:.3g}' if isinstance(v, float) else str(v)
                for v in (t.params.get(k, '') for k in keys)]
        a = t.user_attrs
        score = f'{t.value:.4f}' if t.value is not None else ''
        pos = f'{a["val_median_pos"]:.3f}' if 'val_median_pos' in a else ''
        rot = f'{a["val_median_rot"]:.2f}' if 'val_median_rot' in a else ''
        lines.append(f'| {rank} | {t.number} | {t.state.name} | {a.get("epochs", "")} | '
                     f'{score} | {pos} | {rot} | ' + ' | '.join(vals) + ' |')
    lines.append('')
    for title, (name, note) in plots.items():
        lines.append(f'![{title}]({name})' if name else f'{title}: {note}')
        lines.append('')
    return '\n'.join(lines)


def _save_axes(ax, path: Path) -> None:
    fig = ax.figure
    fig.set_size_inches(8, 5)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format='png', dpi=100, bbox_inches='tight')
    import matplotlib.pyplot as plt
    plt.close(fig)


def write_plots(study, out: Path) -> dict:
    """Optuna's optimization history and parameter importances as PNG files (Agg backend).

    Returns ``{title: (file name or None, note)}``; importances need two complete trials.
    """
    import matplotlib
    matplotlib.use('Agg')
    optuna = _optuna()
    from optuna.visualization import matplotlib as ovm
    plots = {}
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == 'COMPLETE']
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
        if done:
            _save_axes(ovm.plot_optimization_history(study, target_name='validation score'),
                       out / 'history.png')
            plots['Optimization history'] = ('history.png', '')
        else:
            plots['Optimization history'] = (None, 'no complete trial yet')
        if len(done) < 2:
            plots['Parameter importances'] = (
                None, f'skipped: needs at least 2 complete trials, the study has {len(done)}')
        else:
            try:
                ax = ovm.plot_param_importances(study, target_name='validation score')
            except Exception as exc:   # noqa: BLE001 - a plot never costs the results
                plots['Parameter importances'] = (None, f'skipped: {exc}')
            else:
                _save_axes(ax, out / 'importances.png')
                plots['Parameter importances'] = ('importances.png', '')
    return plots


def write_results(study, out: Path, url: str, log=None) -> Path:
    """results.json, results.md and the plots of the whole study (all workers' trials)."""
    log = log or logger.info
    plots = write_plots(study, out)
    data = {'study': {'name': study.study_name, 'storage': shown_url(url),
                      'written': time.strftime('%Y-%m-%dT%H:%M:%S'),
                      'counts': _counts(study)},
            'trials': trial_records(study)}
    atomic_write_text(out / 'results.json', json.dumps(data, indent=1))
    table = format_results(study, plots)
    atomic_write_text(out / 'results.md', table)
    log(table)
    return out / 'results.md'
