# camreloc_ros developer entry points. `make demo` and `make test` set everything up first.
# Setup is stamp-based: a second `make setup` only checks the stamps (seconds).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps
# The upstream ROS 2 launch system and `ros2` CLI, beside the repository (as CI has it).
ROS2_LAUNCH_SRC ?= $(abspath $(CURDIR)/../shared/vendor/ros2-launch)
export ROS_LOG_DIR ?= $(CURDIR)/.venv/ros_log

.PHONY: setup demo test test-fast lint bench accuracy clean-venv

setup: $(STAMPS)/project $(STAMPS)/ros2_launch $(STAMPS)/colcon

$(STAMPS)/venv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/requirements: requirements.txt constraints.txt $(STAMPS)/venv
	@echo '== installing pinned requirements into $(VENV) (first time: ~2 min)'
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	@touch $@

$(STAMPS)/tf2_msgs: scripts/build_ros_interfaces.sh $(STAMPS)/requirements
	@bash scripts/build_ros_interfaces.sh $(VENV) tf2_msgs
	@touch $@

# launch, launch_ros, ros2launch, ros2cli/pkg/run and composition_interfaces (first time: ~2 min)
$(STAMPS)/ros2_launch: scripts/install_ros2_launch.sh scripts/build_ros_interfaces.sh \
		$(STAMPS)/requirements
	@bash scripts/install_ros2_launch.sh $(VENV) $(ROS2_LAUNCH_SRC)
	@touch $@

# colcon in its own small venv (it pins setuptools<80), run through $(VENV)/bin/colcon
$(STAMPS)/colcon: requirements-colcon.txt scripts/install_colcon.sh $(STAMPS)/venv
	@bash scripts/install_colcon.sh $(VENV) requirements-colcon.txt
	@touch $@

$(STAMPS)/project: setup.py setup.cfg $(STAMPS)/tf2_msgs
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

demo: setup
	$(PY) -m camreloc_ros.tools.cli demo

test: setup
	$(PY) -m pytest -q test

# the edit loop: everything but the tests marked slow (setup.cfg); `make test` stays the CI command
test-fast: setup
	$(PY) -m pytest -q -m 'not slow' test

lint: setup
	$(PY) -m flake8 camreloc_ros test benchmarks launch setup.py

bench: setup
	$(PY) benchmarks/run_all.py

accuracy: setup
	$(PY) benchmarks/accuracy.py

clean-venv:
	rm -rf $(VENV)
