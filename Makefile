# cnncourse: `make book` builds the book, `make test` runs everything. Both install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JB_FLAGS := -W -n --keep-going
export PYTHONHASHSEED := 0
# Never export matplotlib's backend variable here: kernels inherit it, and ipykernel then skips its inline backend,
# so notebooks (the book, `make lab`) draw no figures. Unit tests choose Agg in tests/conftest.py.
# Notebooks run with their own folder as working directory (nbval, the book, the grader's
# kernels), so a relative data path such as CI's ../shared/data is made absolute here.
ifdef CNNCOURSE_DATA
export CNNCOURSE_DATA := $(abspath $(CNNCOURSE_DATA))
endif

.PHONY: install book book-instructor test unit nbval labs lab clean book-labs lint format-check publish mutants heavy

install: $(STAMP)

# Reinstall only when pyproject.toml changes; the stamp records the last successful install.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[all]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cnncourse)" >/dev/null
	@touch $(STAMP)

# Student versions of the labs, for the published book (never the solutions). They are
# committed too, so that the book's Binder/Colab buttons find them in the repository;
# tests/test_release.py fails when the committed copies are stale.
book-labs: install
	@rm -rf book/labs
	$(BIN)/python -m cnncourse assign labs/ --out book/labs

book: book-labs
	$(BIN)/jupyter-book build . $(JB_FLAGS)
	@echo "Book built: open _build/html/index.html"

# Its labs train models (lab03-lab05 for minutes), so a cell may run longer than the book's 900 s limit
# on a busy machine: the instructor edition's per-cell limit is INSTRUCTOR_CELL_TIMEOUT seconds.
INSTRUCTOR_CELL_TIMEOUT ?= 3600

# Instructor edition: the executed source labs, solutions included. Never publish it.
# Its config is _config.yml with lab execution switched on, and its table of contents is _toc.yml
# plus the exercise solutions (book/solutions.md), both derived here so there is one source.
book-instructor: install
	@rm -rf book/labs && mkdir -p book/labs && cp labs/*.ipynb book/labs/
	sed -e 's|exclude_patterns: \["book/labs/\*"\]|exclude_patterns: []|' \
	    -e 's|^title: "\(.*\)"|title: "\1 (instructor edition)"|' \
	    -e 's|^  timeout: [0-9]*$$|  timeout: $(INSTRUCTOR_CELL_TIMEOUT)|' _config.yml > .instructor_config.yml
	{ sed 's|caption: Labs (student versions)|caption: Labs (with solutions)|' _toc.yml; \
	  printf '  - caption: Solutions (instructor edition)\n    chapters:\n      - file: book/solutions\n'; } > .instructor_toc.yml
	$(BIN)/jupyter-book build . $(JB_FLAGS) --config .instructor_config.yml --toc .instructor_toc.yml --path-output _build/instructor; \
	  status=$$?; rm -rf book/labs .instructor_config.yml .instructor_toc.yml; \
	  $(BIN)/python -m cnncourse assign labs/ --out book/labs >/dev/null; exit $$status
	@echo "Instructor edition: _build/instructor/_build/html/index.html"

# Two pytest workers (pytest-xdist): much of a test's time is spent waiting on a kernel or a subprocess, so
# the second core is otherwise idle. --dist loadfile keeps each test file (and its module fixtures) on one worker.
# PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

unit: install
	$(BIN)/python -m pytest tests -m "not book and not mutants and not heavy" -q $(XDIST)

# Checks too slow for CI (the slowest lab graded while spinners load every core: tens of minutes on 2 cores).
heavy: install
	$(BIN)/python -m pytest tests -m heavy -q -s

# Every lab's mutant suite (tests/labs/*.toml): each plausible wrong answer must lose its question's points.
# About 4.5 minutes on an idle 2-core machine (4 min 22 s, December 2026), so not part of `make test`;
# run it after changing a lab's tests (MUTANTS_K=lab03 runs one lab's suite), and see `lab-report`.
MUTANTS_K ?=
mutants: install
	$(BIN)/python -m pytest tests/test_lab_mutants.py -m mutants -q $(if $(MUTANTS_K),-k "$(MUTANTS_K)")

# One lab at a time: a lab's training cells use both cores (torch's threads), and two labs at once on 2 cores
# made those threads spin-wait on each other. On a 2-core AMD EPYC the ten labs took 14.5 min as two xdist
# workers (in CI) and 3.8 min one at a time (December 2026).
# One nbval item is one notebook cell; a cell that hangs fails after NBVAL_CELL_TIMEOUT seconds.
NBVAL_CELL_TIMEOUT ?= 900
nbval: install
	$(BIN)/python -m pytest --nbval-lax labs/ -q -p no:cacheprovider --timeout $(NBVAL_CELL_TIMEOUT)

# Lint and type-check the library (configured in pyproject.toml).
lint: install
	$(BIN)/ruff check cnncourse
	$(BIN)/ruff format --check cnncourse
	$(BIN)/mypy

# Part of `lint` (so of `test`); kept as its own target for editors and pre-commit hooks.
format-check: install
	$(BIN)/ruff format --check cnncourse

# The book and browser tests read the built site; two workers as for `unit` (one Chromium each).
test: lint unit nbval book
	$(BIN)/python -m pytest tests -m book -q $(XDIST)

# Publish the built book as a static site: `_build/html` becomes the gh-pages branch of origin
# (ghp-import, a [book] extra; -n adds .nojekyll so _static/ is served, -f replaces the old site).
publish:
	@test -f _build/html/index.html || { echo "no built book: run 'make book' first"; exit 1; }
	$(BIN)/ghp-import -n -p -f _build/html

labs: install
	$(BIN)/python -m cnncourse assign labs/ --out release/

# A student's JupyterLab on the released labs: labs missing from $(LAB_DIR) are released into it first, and a lab
# already there is never overwritten (it holds the student's answers). $(LAB_DIR) is the student's own folder:
# `make labs` writes release/ and `make clean` deletes release/, never $(LAB_DIR). LAB_FLAGS passes options to
# JupyterLab (tests/test_jupyterlab.py passes a port, a token and --no-browser). Containers run as root: JupyterLab
# refuses root unless told it is meant.
LAB_DIR ?= my-labs
lab: install
	@mkdir -p "$(LAB_DIR)" && tmp=$$(mktemp -d) && $(BIN)/python -m cnncourse assign labs/ --out "$$tmp" >/dev/null && \
	  for f in "$$tmp"/*.ipynb; do test -e "$(LAB_DIR)/$${f##*/}" || { mv "$$f" "$(LAB_DIR)/" && \
	  echo "released $(LAB_DIR)/$${f##*/}"; }; done; rm -rf "$$tmp"
	@test "$(LAB_DIR)" = release || test -z "$$(ls release/*.ipynb 2>/dev/null)" || \
	  echo "note: release/ holds labs too (make lab's folder before $(LAB_DIR)/); answers you wrote there stay there"
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_FLAGS) "$(LAB_DIR)"

# release/ is deleted only when no notebook in it was edited since its release (a student may have worked there).
clean:
	@if [ -d release ]; then \
	  kept=$$($(BIN)/python -c 'from cnncourse.grading.release import edited_notebooks as e; print(*e("release"))' 2>&1); \
	  if [ -z "$$kept" ]; then rm -rf release; else \
	    echo "kept release/: notebooks changed since their release (or the check failed): $$kept"; \
	    echo "  move them elsewhere (make lab uses $(LAB_DIR)/), then run make clean again"; fi; fi
	rm -rf _build .pytest_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
