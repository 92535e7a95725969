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
# Usage: bash scripts/build_ros_interfaces.sh VENV_DIR PACKAGE [SOURCE_DIR]
#
# Builds one ROS 2 interface package (msg/srv) with the rosidl generators from the PyPI
# ros-kilted-* wheels and installs it into VENV_DIR, so that `VENV_DIR/bin/python -c 'import
# PACKAGE.msg'` works with no extra environment variables. For interface packages that are not
# on PyPI:
#   tf2_msgs                (no SOURCE_DIR: only tf2_msgs/msg/TFMessage, written here)
#   composition_interfaces  SOURCE_DIR = ../shared/vendor/ros2-launch/rcl_interfaces/
#                           composition_interfaces (upstream, unmodified; launch_ros needs it)
# SOURCE_DIR is copied to a temp dir first: it is never written to. A robot's ROS 2
# distribution already has these packages: then (and after an earlier build) this script only
# checks the imports and exits. Known upstream type hashes are checked after the build, so real
# nodes on a robot read what these packages publish.
set -euo pipefail

say() { echo "== ${PKG:-interfaces}: $*"; }
die() { echo "== ${PKG:-interfaces}: ERROR: $*" >&2; exit 1; }

[ $# -ge 2 ] && [ $# -le 3 ] || die "usage: bash $0 VENV_DIR PACKAGE [SOURCE_DIR]"
PKG="$2"
[ -d "$1" ] || die "venv directory '$1' does not exist"
VENV="$(cd "$1" && pwd -P)"
PY="$VENV/bin/python"
[ -x "$PY" ] || die "$PY not found or not executable"

# Upstream RIHS01 type hashes checked after a build ('type hash' pairs, one per line).
TFMESSAGE_HASH='RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087'
case "$PKG" in
  tf2_msgs) EXPECTED_HASHES="tf2_msgs/msg/TFMessage $TFMESSAGE_HASH" ;;
  *) EXPECTED_HASHES='' ;;
esac

# The wheels' .pth re-executes Python once to set LD_LIBRARY_PATH for this venv; a guard
# variable inherited from some other Python process would skip that.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

WORK="$(mktemp -d "${TMPDIR:-/tmp}/${PKG}_build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
SRC="$WORK/src/$PKG"

# 1. The package source in a temp dir.
if [ $# -eq 3 ]; then
  [ -f "$3/package.xml" ] && [ -f "$3/CMakeLists.txt" ] || \
    die "SOURCE_DIR '$3' is not a ROS package (needs package.xml and CMakeLists.txt)"
  mkdir -p "$WORK/src"
  cp -r "$3" "$SRC"
  chmod -R u+w "$SRC"
  name="$(sed -n 's:.*<name>\(.*\)</name>.*:\1:p' "$SRC/package.xml" | head -n 1)"
  [ "$name" = "$PKG" ] || die "SOURCE_DIR '$3' holds package '$name', not '$PKG'"
elif [ "$PKG" = tf2_msgs ]; then
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
else
  die "no built-in source for '$PKG': give its SOURCE_DIR"
fi

# The interface types of the package, e.g. 'msg/TFMessage srv/LoadNode'.
TYPES="$(cd "$SRC" && for f in msg/*.msg srv/*.srv; do
  [ -f "$f" ] && echo "${f%.*}"; done || true)"
[ -n "$TYPES" ] || die "no msg/*.msg or srv/*.srv in the package source"

# Imports and constructs every type (a service: its Request and Response).
# shellcheck disable=SC2086
check_imports() {
  env -i HOME="${HOME:-/tmp}" PATH=/usr/bin:/bin "$PY" - "$PKG" $TYPES <<'EOF'
import importlib
import sys

pkg = sys.argv[1]
for spec in sys.argv[2:]:
    kind, name = spec.split('/')
    cls = getattr(importlib.import_module('%s.%s' % (pkg, kind)), name)
    if kind == 'srv':
        cls.Request()
        cls.Response()
    else:
        cls()
EOF
}

# 2. Already importable (ROS distribution, or an earlier build): nothing to do.
if check_imports >/dev/null 2>&1; then
  say "already importable by $PY, nothing to build"
  exit 0
fi

START_S=$SECONDS
say "building $(echo $TYPES | tr '\n' ' ')into $VENV"

# 3. Tools and build dependencies.
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

# Missing CMake packages, each with the pip package that provides it: the generators' own
# (see the notes on building tf2_msgs) and the package's <depend>/<build_depend> entries.
deps="$(sed -n 's:.*<\(build_\)\{0,1\}depend>\(.*\)</\(build_\)\{0,1\}depend>.*:\2:p' \
  "$SRC/package.xml")"
missing=''
for pkg in ament_cmake ament_cmake_include_directories ament_cmake_ros_core \
    rosidl_core_generators rosidl_default_generators $deps; do
  [ -d "$PREFIX/share/$pkg/cmake" ] || missing="$missing ros-kilted-${pkg//_/-}"
done
for pair in 'ament_package:ros-kilted-ament-package' 'catkin_pkg:catkin-pkg' 'numpy:numpy' \
    'em:empy' 'lark:lark-parser'; do
  "$PY" -c "import ${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair#*:}"
done
[ -z "$missing" ] || die "missing pip packages in $VENV:$missing"

PY_INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
[ -f "$PY_INCLUDE/Python.h" ] || die "Python headers missing ($PY_INCLUDE/Python.h)" \
  "(install the python3.11-dev package for this interpreter)"

# 4. The wheels' exported rosidl_generator_py targets name the wheel builder's Python and numpy
# include dirs (/opt/python/cp311-cp311/...), which CMake rejects as non-existent. Point them
# at this venv's. Only files with a non-existent entry are rewritten.
"$PY" - "$PREFIX" "$PKG" <<'EOF'
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
print('== %s: include dirs rewritten in %d of %d rosidl_generator_py export files'
      % (sys.argv[2], changed, len(files)))
EOF

# 5. Build and install. The build must find the wheels' ament index and CMake configs. Only
# this prefix is used, so a sourced ROS distribution of another version cannot mix in.
export AMENT_PREFIX_PATH="$PREFIX"
export CMAKE_PREFIX_PATH="$PREFIX"
export PATH="$VENV/bin:$PATH"
LOG="$WORK/build.log"

run_logged() {
  if ! "$@" >>"$LOG" 2>&1; then
    echo "== $PKG: ERROR: '$1 ${2:-}' failed; last lines of the log:" >&2
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

# 6. Verify: every type imports from a clean environment, and known type hashes are upstream's.
check_imports || die "$PKG was installed but its types do not import in a clean environment"
while read -r type_name expected; do
  [ -n "$type_name" ] || continue
  hash="$(env -i HOME="${HOME:-/tmp}" PATH=/usr/bin:/bin "$PY" - "$type_name" <<'EOF'
import json
import os
import sys

type_name = sys.argv[1]
with open(os.path.join(sys.prefix, 'share', type_name + '.json')) as f:
    desc = json.load(f)
print([h['hash_string'] for h in desc['type_hashes'] if h['type_name'] == type_name][0])
EOF
)" || die "no type description for $type_name"
  [ "$hash" = "$expected" ] || die "$type_name type hash $hash differs from upstream $expected"
  say "$type_name type hash $hash (matches upstream)"
done <<< "$EXPECTED_HASHES"
say "done in $((SECONDS - START_S)) s"
