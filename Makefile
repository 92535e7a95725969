# camreloc_ros developer entry points. `make demo` and `make test` set everything up first.
# Setup is stamp-based: a second `make setup` only checks the stamps (seconds).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps
export ROS_LOG_DIR ?= $(CURDIR)/.venv/ros_log

.PHONY: setup demo test lint bench accuracy clean-venv

setup: $(STAMPS)/project

$(STAMPS)/venv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/requirements: requirements.txt constraints.txt $(STAMPS)/venv
	@echo '== installing pinned requirements into $(VENV) (first time: ~2 min)'
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	@touch $@

$(STAMPS)/tf2_msgs: scripts/build_tf2_msgs.sh $(STAMPS)/requirements
	@bash scripts/build_tf2_msgs.sh $(VENV)
	@touch $@

$(STAMPS)/project: setup.py setup.cfg $(STAMPS)/tf2_msgs
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

demo: setup
	$(PY) -m camreloc_ros.tools.cli demo

test: setup
	$(PY) -m pytest -q test

lint: setup
	$(PY) -m flake8 camreloc_ros test benchmarks launch setup.py

bench: setup
	$(PY) benchmarks/run_all.py

accuracy: setup
	$(PY) benchmarks/accuracy.py

clean-venv:
	rm -rf $(VENV)
