# Sourced by scripts/run and scripts/test: make .venv and install the pinned
# requirements of one profile, skipping the install when nothing changed.
# usage: source scripts/_venv.sh <worker|test>
profile="$1"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null; then
  echo "Python 3.11 or newer is needed (found: $("$PYTHON" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv || { echo "Install the venv module first: sudo apt install python3-venv" >&2; exit 1; }
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=".venv/.installed-$profile"
want="$(cat requirements/*.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing requirements/$profile.txt (first run takes a few minutes)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile -r "requirements/$profile.txt"
  # Bytecode for every module on all cores (pip compiles one file at a time:
  # two thirds of the install); written even where PYTHONDONTWRITEBYTECODE is
  # set, which would otherwise make every process compile torch anew.
  .venv/bin/python -m compileall -q -j 0 .venv/lib >/dev/null 2>&1 || true
  echo "$want" > "$stamp"
fi
