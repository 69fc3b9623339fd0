# egressguard: the two commands people run are `make demo` and `make test`.
# Everything installs from Debian's and PyPI's packages (see scripts/install.sh).

PY      := .venv/bin/python
PYTEST  := $(PY) -m pytest

.PHONY: install demo test test-unit test-kernel bench proto clean

install: .venv/.installed

.venv/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh
	touch $@

demo: install
	$(PY) -m egressguard.demo $(ARGS)

test: install
	$(PYTEST) -v -rs --maxfail=30 tests

test-unit: install
	$(PYTEST) -q -m "not kernel" tests

test-kernel: install
	$(PYTEST) -q -m kernel tests

bench: install
	$(PY) bench/scanner.py
	$(PY) bench/database.py
	$(PY) bench/detection.py
	$(PY) bench/proxy.py
	$(PY) bench/tls.py
	$(PY) bench/httpcodec.py
	$(PY) bench/load.py
	$(PY) bench/sinks.py
	$(PY) bench/approvals.py

proto: install
	$(PY) -m egressguard.approvals.gen_proto

clean:
	rm -rf .venv build *.egg-info
