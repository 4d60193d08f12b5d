# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv at the repo root if it is missing and install the
# project into it with constraints.txt (which pins torch).

VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -m pip install -c constraints.txt -e '.[test]'
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

test: install
	$(PYTHON) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
