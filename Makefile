# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv at the repo root if it is missing and install the
# project into it with every extra (sweep, analysis, test) and constraints.txt
# (which pins torch).

VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo lint test bench bench-gpu clean

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

clean:
	rm -rf $(VENV) build *.egg-info
