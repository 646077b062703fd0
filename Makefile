# The two commands of the README: `make demo` and `make test` (each sets up first).
PYTHON ?= python3

.PHONY: setup demo test test-debian13 test-load lint unit integration bench

setup:
	bash scripts/setup.sh

demo: setup
	$(PYTHON) -m devkit.demo

lint:
	$(PYTHON) -m ruff check plugin devkit tests bench examples docker
	$(PYTHON) -m mypy

unit:
	$(PYTHON) -m pytest tests/unit -q

integration:
	$(PYTHON) -m pytest tests/integration -q

test: setup lint
	$(PYTHON) -m pytest tests -q -ra

# The same suite on Debian 13 (Orthanc 1.12.7, Python plugin 5.0, Python 3.13), in a
# chroot that scripts/debian13.sh makes once with debootstrap (root only): with the Python
# plugin's defaults, then with "AllowThreads": true, which the README recommends.
test-debian13:
	bash scripts/debian13.sh python3 -m pytest tests -q -ra -p no:cacheprovider
	bash scripts/debian13.sh env TRANSFERS_ALLOW_THREADS=1 \
	  python3 -m pytest tests -q -ra -p no:cacheprovider

test-load: setup
	$(PYTHON) -m pytest tests/load -q -ra -m load

bench: setup
	$(PYTHON) -m bench.run
