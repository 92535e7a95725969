#!/usr/bin/env bash
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
#
# Usage: bash scripts/install_colcon.sh VENV_DIR REQUIREMENTS
#
# Installs colcon (pinned in REQUIREMENTS, requirements-colcon.txt) into its own small venv
# VENV_DIR/colcon: colcon-core 0.21 declares setuptools<80, VENV_DIR has a newer one. Then writes
# VENV_DIR/bin/colcon, which runs that colcon with VENV_DIR's Python (colcon's packages first on
# PYTHONPATH). colcon builds an ament_python package with the Python that runs it, so the
# installed console scripts (lib/<pkg>/<exe>) start VENV_DIR's Python, which has rclpy and
# torch: the same as `python -m colcon build` from a robot's venv (README, "On a robot").
set -euo pipefail

say() { echo "== colcon: $*"; }
die() { echo "== colcon: ERROR: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: bash $0 VENV_DIR REQUIREMENTS"
[ -d "$1" ] || die "venv directory '$1' does not exist"
[ -f "$2" ] || die "requirements file '$2' does not exist"
VENV="$(cd "$1" && pwd -P)"
PY="$VENV/bin/python"
[ -x "$PY" ] || die "$PY not found or not executable"
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
COLCON_VENV="$VENV/colcon"
START_S=$SECONDS

if [ ! -x "$COLCON_VENV/bin/python" ]; then
  say "creating $COLCON_VENV"
  # The base interpreter of VENV_DIR: the same Python version, so the install space's
  # lib/pythonX.Y/site-packages is the one VENV_DIR's Python reads.
  base="$("$PY" -c 'import sys; print(sys._base_executable)')"
  "$base" -m venv "$COLCON_VENV"
fi
say "pip install -r $2"
# (pip's notes about unreadable local index folders of this machine kind are dropped)
"$COLCON_VENV/bin/python" -m pip install -q -r "$2" 2> >(grep -v ' is ignored: ' >&2)
SITE="$("$COLCON_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

cat > "$VENV/bin/colcon" <<EOF
#!/bin/sh
# colcon from $COLCON_VENV run by this venv's Python (written by scripts/install_colcon.sh).
PYTHONPATH="$SITE\${PYTHONPATH:+:\$PYTHONPATH}" exec "$PY" -m colcon "\$@"
EOF
chmod +x "$VENV/bin/colcon"

# Verify: the wrapper runs colcon with this venv's Python and has the ament_python build.
out="$(env -i HOME="${HOME:-/tmp}" PATH=/usr/bin:/bin "$VENV/bin/colcon" --log-base /dev/null \
  extensions 2>&1)" || \
  die "'$VENV/bin/colcon extensions' fails: $out"
grep -q "ros.ament_python: Build" <<< "$out" || \
  die "colcon has no ament_python build (colcon-ros missing)"
say "$VENV/bin/colcon ready ($((SECONDS - START_S)) s)"
