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

demo: install
	$(VENV)/bin/onlinenorm bench layer

test: install
	$(PYTHON) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
