# The two set-up commands of the README are `make demo` and `make test`; both install first.
# torch is pinned before the project is installed: an unpinned torch pulls a multi-GB CUDA build.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
DEMO_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)
# 10,000 training images, 5 epochs, validated (50 points) and row gaps (50 training points)
# at the end: the three modes in about 6 minutes on 2 cores.
DEMO_TRAIN ?= data.num_train=10000 train.epochs=5 train.gaps_every=5 train.valid_num_points=50 train.gaps_num_points=50
DEMO_EVAL ?= num_points=200

.PHONY: install data postgres demo test lint bench gpu-check gpu-wheels

install:
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev,postgres]'

# Fashion-MNIST: the Debian package where we may install it, else the official files into ~/.cache.
data: install
	@if $(PYTHON) -c "import sys; from vi_lab.data.fashion_mnist import find_data_dir; sys.exit(find_data_dir() is None)"; then \
		echo "Fashion-MNIST found"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
		$(PYTHON) -c "from vi_lab.data.fashion_mnist import download, user_cache_dir; download(user_cache_dir())"; \
	fi

# A short comparison on Fashion-MNIST: train the three modes on the same data for the same
# number of decoder steps, measure their gaps, print the table (with the equal-budget rows), draw the
# budget curves and write the folder's HParams experiment (`tensorboard --logdir $(DEMO_DIR)`).
demo: data
	vi-lab train configs/amortized.yaml $(DEMO_TRAIN) --run-dir $(DEMO_DIR)/amortized
	vi-lab train configs/semi_amortized.yaml $(DEMO_TRAIN) --run-dir $(DEMO_DIR)/semi_amortized
	vi-lab train configs/local.yaml $(DEMO_TRAIN) --run-dir $(DEMO_DIR)/local
	vi-lab evaluate $(DEMO_DIR)/amortized $(DEMO_EVAL)
	vi-lab evaluate $(DEMO_DIR)/semi_amortized $(DEMO_EVAL)
	vi-lab evaluate $(DEMO_DIR)/local $(DEMO_EVAL)
	vi-lab compare $(DEMO_DIR)/amortized $(DEMO_DIR)/semi_amortized $(DEMO_DIR)/local --figure $(DEMO_DIR)/budget.png
	vi-lab board $(DEMO_DIR)

# PostgreSQL server binaries for the study tests (a throwaway server on a temporary folder):
# Debian's package where we may install it; the tests say why they skip where it is missing.
postgres:
	@if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
		echo "PostgreSQL found"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else \
		echo "PostgreSQL not installed and not root: the PostgreSQL study tests will skip"; \
	fi

test: data postgres
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check vi_lab tests benchmarks
	$(PYTHON) -m ruff format --check vi_lab tests benchmarks

# One markdown table (benchmarks/run_all.py): ours against a reference, row by row, with the machine.
bench: install
	$(PYTHON) -m benchmarks.run_all

# Every CUDA path once (all modes and families a few steps in bf16, compiled; device tests; bench
# rows), results to $$OUT (the device machine's) or runs/gpu-check: docs/performance.md.
gpu-check:
	$(PYTHON) -m benchmarks.gpu_check --out $${OUT:-runs/gpu-check}

# The packages the device machine lacks (its Python 3.12 has torch, numpy, scipy, matplotlib,
# tensorboard, tqdm, pytest), as x86-64 wheels in .whl/ (git-ignored locally), to carry there:
# docs/performance.md, "On a GPU".
GPU_WHEELS ?= optuna==5.1.0 omegaconf==2.4.0 antlr4-python3-runtime==4.13.2 alembic==1.20.1 \
	sqlalchemy==2.1.9 colorlog==6.12.0 mako==1.4.3
gpu-wheels:
	grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(GPU_WHEELS)
