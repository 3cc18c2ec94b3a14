# The two commands of the README: `make run` and `make test`. Everything else is their plumbing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_WORKERS ?= 2

.PHONY: run test lint translations messages chromium clean

run: $(VENV)/.installed-run translations
	$(BIN)/crm up

test: $(VENV)/.installed-test translations chromium
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	touch $@

$(VENV)/.installed-run: $(VENV)/.created pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.created pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

translations: $(VENV)/.installed-run
	$(BIN)/pybabel compile -d translations >/dev/null

# After changing user-facing text: refresh the catalogs, then translate what is new in ar/.
messages: $(VENV)/.installed-run
	$(BIN)/pybabel extract -F babel.cfg -k lazy_gettext -k lazy_ngettext:1,2 -k pgettext:1c,2 -k lazy_pgettext:1c,2 -o translations/messages.pot .
	$(BIN)/pybabel update -i translations/messages.pot -d translations

# Browser tests use Debian's Chromium; Playwright's own browser download does not work here.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else echo "Chromium is missing: install the 'chromium' package (browser tests need it)"; exit 1; fi; }

clean:
	rm -rf $(VENV) instance .pytest_cache
