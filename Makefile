# `make demo`: set up .venv and train on the embedded synthetic faces.
# `make test`: set up .venv and run the whole test suite (non-zero exit on any failure).
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: setup demo test clean

$(STAMP): pyproject.toml requirements-pinned.txt requirements-nodeps.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-pinned.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP)
	$(PY) -m pytest tests

clean:
	rm -rf runs/demo .cache
