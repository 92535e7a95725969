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
# Usage: bash scripts/build_tf2_msgs.sh VENV_DIR
#
# Builds the ROS 2 message package tf2_msgs (only tf2_msgs/msg/TFMessage, which is all
# camreloc_ros needs) with the rosidl generators from the PyPI ros-kilted-* wheels and installs
# it into VENV_DIR, so that `VENV_DIR/bin/python -c 'import tf2_msgs.msg'` works with no extra
# environment variables. tf2_msgs is not on PyPI. A robot's ROS 2 distribution already has it:
# then (and after an earlier build) this script only checks the import and exits.
# The generated TFMessage has the upstream type hash, so real tf2 listeners read it.
set -euo pipefail

TFMESSAGE_HASH='RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087'

say() { echo "== tf2_msgs: $*"; }
die() { echo "== tf2_msgs: ERROR: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: bash $0 VENV_DIR"
[ -d "$1" ] || die "venv directory '$1' does not exist"
VENV="$(cd "$1" && pwd -P)"
PY="$VENV/bin/python"
[ -x "$PY" ] || die "$PY not found or not executable"

# The wheels' .pth re-executes Python once to set LD_LIBRARY_PATH for this venv; a guard
# variable inherited from some other Python process would skip that.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

# 1. Already importable (ROS distribution, or an earlier build): nothing to do.
if "$PY" -c 'import tf2_msgs.msg' >/dev/null 2>&1; then
  say "already importable by $PY, nothing to build"
  exit 0
fi

START_S=$SECONDS
say "building tf2_msgs/msg/TFMessage into $VENV"

# 2. Tools and build dependencies.
for tool in cmake make cc c++; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (needs cmake, make, gcc, g++)"
done

# The prefix where the ROS wheels put their ament index / CMake configs (the venv root here).
PREFIX=''
if [ -f "$VENV/share/ament_index/resource_index/packages/rosidl_default_generators" ]; then
  PREFIX="$VENV"
else
  marker="$(find "$VENV" -maxdepth 8 -type f \
    -path '*/share/ament_index/resource_index/packages/rosidl_default_generators' \
    -print -quit 2>/dev/null || true)"
  [ -n "$marker" ] && PREFIX="${marker%/share/ament_index/resource_index/packages/*}"
fi
[ -n "$PREFIX" ] || die "no ament prefix with rosidl_default_generators in $VENV" \
  "(pip install ros-kilted-rosidl-default-generators)"
say "ament prefix: $PREFIX"

# Missing pieces, each with the pip package that provides it (blockers 1-4 of the notes).
missing=''
for pair in \
    'ament_cmake:ros-kilted-ament-cmake' \
    'ament_cmake_include_directories:ros-kilted-ament-cmake-include-directories' \
    'ament_cmake_ros_core:ros-kilted-ament-cmake-ros-core' \
    'rosidl_core_generators:ros-kilted-rosidl-core-generators' \
    'rosidl_default_generators:ros-kilted-rosidl-default-generators' \
    'builtin_interfaces:ros-kilted-builtin-interfaces' \
    'geometry_msgs:ros-kilted-geometry-msgs'; do
  pkg="${pair%%:*}"
  [ -d "$PREFIX/share/$pkg/cmake" ] || missing="$missing ${pair#*:}"
done
for pair in 'ament_package:ros-kilted-ament-package' 'catkin_pkg:catkin-pkg' 'numpy:numpy' \
    'em:empy' 'lark:lark-parser'; do
  "$PY" -c "import ${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair#*:}"
done
[ -z "$missing" ] || die "missing pip packages in $VENV:$missing"

PY_INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
[ -f "$PY_INCLUDE/Python.h" ] || die "Python headers missing ($PY_INCLUDE/Python.h)" \
  "(install the python3.11-dev package for this interpreter)"

# 3. Blocker 5: the wheels' exported rosidl_generator_py targets name the wheel builder's Python
# and numpy include dirs (/opt/python/cp311-cp311/...), which CMake rejects as non-existent.
# Point them at this venv's. Only files with a non-existent entry are rewritten.
"$PY" - "$PREFIX" <<'EOF'
import glob
import os
import re
import sys
import sysconfig

import numpy

prefix = sys.argv[1]
good = '%s;%s' % (sysconfig.get_paths()['include'], numpy.get_include())
pattern = re.compile(r'(INTERFACE_INCLUDE_DIRECTORIES ")([^"]*)(")')
changed = 0
files = sorted(glob.glob(os.path.join(
    prefix, 'share', '*', 'cmake', 'export_*__rosidl_generator_pyExport.cmake')))
for path in files:
    with open(path) as f:
        text = f.read()

    def fix(m):
        dirs = [d for d in m.group(2).split(';') if d]
        if all(os.path.isdir(d) for d in dirs):
            return m.group(0)
        return m.group(1) + good + m.group(3)

    new = pattern.sub(fix, text)
    if new != text:
        with open(path, 'w') as f:
            f.write(new)
        changed += 1
print('== tf2_msgs: include dirs rewritten in %d of %d rosidl_generator_py export files'
      % (changed, len(files)))
EOF

# 4. Generate the package in a temp dir that is removed at exit.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tf2_msgs_build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
SRC="$WORK/src/tf2_msgs"
mkdir -p "$SRC/msg"
printf '%s\n' 'geometry_msgs/TransformStamped[] transforms' > "$SRC/msg/TFMessage.msg"
cat > "$SRC/package.xml" <<'EOF'
<?xml version="1.0"?>
<?xml-model href="http://download.ros.org/schema/package_format3.xsd" schematypens="http://www.w3.org/2001/XMLSchema"?>
<package format="3">
  <name>tf2_msgs</name>
  <version>0.41.0</version>
  <description>
    tf2_msgs/msg/TFMessage only, built locally by camreloc_ros (tf2_msgs is not on PyPI).
  </description>
  <maintainer email="camreloc_ros@example.com">camreloc_ros authors</maintainer>
  <license>BSD-3-Clause</license>

  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>

  <depend>builtin_interfaces</depend>
  <depend>geometry_msgs</depend>

  <exec_depend>rosidl_default_runtime</exec_depend>

  <member_of_group>rosidl_interface_packages</member_of_group>

  <export>
    <build_type>ament_cmake</build_type>
  </export>
</package>
EOF
cat > "$SRC/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.20)
project(tf2_msgs)

find_package(ament_cmake REQUIRED)
find_package(builtin_interfaces REQUIRED)
find_package(geometry_msgs REQUIRED)
find_package(rosidl_default_generators REQUIRED)

rosidl_generate_interfaces(${PROJECT_NAME}
  "msg/TFMessage.msg"
  DEPENDENCIES builtin_interfaces geometry_msgs
)

ament_export_dependencies(rosidl_default_runtime)
ament_package()
EOF

# Blocker 6: the build must find the wheels' ament index and CMake configs. Only this prefix is
# used, so a sourced ROS distribution of another version cannot mix in.
export AMENT_PREFIX_PATH="$PREFIX"
export CMAKE_PREFIX_PATH="$PREFIX"
export PATH="$VENV/bin:$PATH"
LOG="$WORK/build.log"

run_logged() {
  if ! "$@" >>"$LOG" 2>&1; then
    echo "== tf2_msgs: ERROR: '$1 ${2:-}' failed; last lines of the log:" >&2
    tail -n 60 "$LOG" >&2
    exit 1
  fi
}

say 'cmake configure'
run_logged cmake -S "$SRC" -B "$WORK/build" \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_TESTING=OFF \
  -DCMAKE_PREFIX_PATH="$PREFIX" \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$PY"
say "cmake build (-j2, $((SECONDS - START_S)) s so far)"
run_logged cmake --build "$WORK/build" -j2
say 'cmake install'
run_logged cmake --install "$WORK/build"

# 5. Verify: the import works from a clean environment, and the type hash is upstream's.
hash="$(env -i HOME="${HOME:-/tmp}" PATH=/usr/bin:/bin "$PY" -c '
import json, os, sys
import tf2_msgs.msg
from tf2_msgs.msg import TFMessage
TFMessage()
with open(os.path.join(sys.prefix, "share", "tf2_msgs", "msg", "TFMessage.json")) as f:
    desc = json.load(f)
print([h["hash_string"] for h in desc["type_hashes"]
       if h["type_name"] == "tf2_msgs/msg/TFMessage"][0])
')" || die "tf2_msgs was installed but 'import tf2_msgs.msg' fails in a clean environment"
[ "$hash" = "$TFMESSAGE_HASH" ] || die "TFMessage type hash $hash differs from upstream" \
  "$TFMESSAGE_HASH"
say "TFMessage type hash $hash (matches upstream)"
say "done in $((SECONDS - START_S)) s"
