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

"""``make bench``: every speed benchmark in turn, each printing its markdown table.

Accuracy is separate (``make accuracy``): it trains several models and takes longer; so does
``default_stages.py`` (accuracy and time of 1, 2 and 3 trainable stages, run by hand) and
``fine_tuning.py`` (a lower trunk learning rate, a larger input, the other heads; issue 23).
"""

from pathlib import Path
import subprocess
import sys

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    ('forward time per backbone', ['forward.py']),
    ('the network near the floor: sgemm floor, fp32 / int8 / bf16 forward, the node per frame '
     '(issue 21)', ['forward.py', '--floor']),
    ('frozen-feature cache', ['feature_cache.py']),
    ('training input pipeline, 0/1/2 workers', ['input_pipeline.py']),
    ('runtimes (eager, ONNX Runtime, ...)', ['runtimes.py']),
    ('live node', ['live_node.py']),
    ('bag-eval vs evaluate', ['bag_eval.py']),
    ('refiner on a depth map (7-Scenes mini, leave one out)', ['refine_depth.py']),
    ('refiner on one core: matchers, stages, map size (make demo first)',
     ['refine_speed.py']),
    ('geometric tracker per frame, native and VGA (HoloLens walk)', ['tracker.py']),
    ('live node with a map: every published pose scored by stamp, with and without odometry',
     ['live_map.py']),
]


def main() -> int:
    """Run each benchmark that exists; a failing one is reported and the rest still run."""
    failed = []
    for title, cmd in BENCHMARKS:
        script = HERE / cmd[0]
        if not script.is_file():
            continue
        print(f'\n## {title} ({cmd[0]})\n', flush=True)
        if subprocess.run([sys.executable, str(script), *cmd[1:]]).returncode != 0:
            failed.append(cmd[0])
    if failed:
        print(f'\nfailed: {", ".join(failed)}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
