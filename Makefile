# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv at the repo root if it is missing and install the
# project into it with every extra (sweep, analysis, test) and constraints.txt
# (which pins torch).

VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo lint test bench clean

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

# Lint and format are checked before the tests run: a lint error fails `make test`.
lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

test: install lint
	$(PYTHON) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
