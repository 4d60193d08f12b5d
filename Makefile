# The two commands a newcomer needs: `make demo` and `make test` (`make test-quick` while iterating).
# Both create .venv at the repo root if it is missing and install the
# project into it with every extra (sweep, analysis, test) and constraints.txt
# (which pins torch).

VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo lint test test-quick test-floor bench bench-gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -m pip install -c constraints.txt -e '.[all,test]'
	touch $(STAMP)

# The main job: the quick sweep on an embedded Ray (synthetic CIFAR-10 made on
# first use), then its report. A fresh timestamped name each run, because a
# sweep never writes into an existing experiment directory.
demo: install
	name=quick-$$(date +%Y%m%d-%H%M%S) && \
	$(VENV)/bin/onlinenorm sweep run sweeps/specs/quick.yaml --name $$name && \
	$(VENV)/bin/onlinenorm report results/$$name

# The figures in BENCHMARKS.md.
bench: install
	$(VENV)/bin/onlinenorm bench layer
	$(VENV)/bin/onlinenorm bench train
	$(VENV)/bin/onlinenorm bench sweep

# The GPU figures in one go (about 10 minutes on an H200): the layer's tests on the GPU (the oracle tests
# of every kernel choice, the Triton kernels' included), then, side by side in one process per table, the
# layer against cuDNN batch norm and the memory-traffic floor at the ResNet-20 shapes and (32, 256, 56, 56)
# in float32 and bfloat16, and resnet20 and resnet50 training steps against batch norm.
bench-gpu: install
	$(PYTHON) -m pytest -q tests/test_gpu.py tests/test_layer_oracle.py tests/test_compile.py -k "gpu or triton or cuda"
	$(VENV)/bin/onlinenorm bench layer --device cuda --dtype float32,bfloat16 --kernels triton --oracle-rounds 0 --rounds 50
	$(VENV)/bin/onlinenorm bench train --device cuda --model resnet20 --batch-size 128 --rounds 10 --steps 10
	$(VENV)/bin/onlinenorm bench train --device cuda --model resnet50 --batch-size 32 --image-size 224 --rounds 5 --steps 5

# Lint and format are checked before the tests run: a lint error fails `make test`.
lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

test: install lint
	$(PYTHON) -m pytest

# For iterating: lint, then every test not marked slow (no Ray instance, cluster, server or training run;
# under a minute on 2 cores). `make test` runs them all.
test-quick: install lint
	$(PYTHON) -m pytest -m "not slow"

# The floors in pyproject.toml, tested (not part of `make test`: a second venv and about 10 minutes):
# .venv-floor, built with Python 3.11 (the oldest supported), gets every direct dependency at its floor
# (constraints-floor.txt; pip picks what they depend on), then runs the tests that use each of them: the
# layer against the per-sample oracle (torch, numpy, triton), the datasets and one training run (Pillow,
# tqdm), the config and spec checks (PyYAML, optuna), the analysis and its notebook (pandas, scipy,
# matplotlib, pyarrow, nbclient) and real Ray sweeps with Optuna, MLflow, W&B and TensorBoard, and on a
# bucket served by moto (ray, pyarrow's S3, mlflow, wandb).
FLOOR_VENV   := .venv-floor
FLOOR_PYTHON := $(FLOOR_VENV)/bin/python
FLOOR_STAMP  := $(FLOOR_VENV)/.installed
FLOOR_TESTS  := tests/test_layer_oracle.py tests/test_data.py tests/test_train_cli.py tests/test_config.py \
	tests/test_sweep_spec.py tests/test_sweep_search.py \
	tests/analysis/test_analysis_load.py tests/analysis/test_analysis_findings.py tests/analysis/test_analysis_report.py \
	tests/analysis/test_analysis_notebook.py tests/test_sweep_ray.py tests/test_sweep_search_ray.py \
	tests/test_object_storage.py
# Left out: torch.compile's kernels (the same torch as make test) and the driver-kill, node-loss and
# interrupted-search scenarios (a minute or more each, through the same Ray Tune calls as the sweeps above).
FLOOR_SKIP   := not compiled and not killed and not losing_a_node and not interrupted and not stopped_optuna

test-floor: $(FLOOR_STAMP)
	$(FLOOR_PYTHON) -m pip check
	$(FLOOR_PYTHON) -m pytest -q $(FLOOR_TESTS) -k '$(FLOOR_SKIP)'

$(FLOOR_STAMP): pyproject.toml constraints-floor.txt
	test -x $(FLOOR_PYTHON) || python3.11 -m venv $(FLOOR_VENV)
	$(FLOOR_PYTHON) -m pip install --upgrade pip
	$(FLOOR_PYTHON) -m pip install -c constraints-floor.txt -e '.[all,test]'
	touch $(FLOOR_STAMP)

clean:
	rm -rf $(VENV) $(FLOOR_VENV) build *.egg-info
