# Shared by scripts/run and scripts/test: find Python >= 3.11, create .venv, install the project.
# Sourced, not executed. Installs again only when pyproject.toml or the requested extras change.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SHAREAI_VENV:-$ROOT/.venv}"

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "error: Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

ensure_venv() {
    local extras="$1" python stamp want
    if [ ! -x "$VENV/bin/python" ]; then
        python="$(find_python)"
        echo "==> creating virtual environment in $VENV with $python"
        "$python" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
    fi
    stamp="$VENV/.shareai-install"
    want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1) extras=[$extras]"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "==> installing shareai${extras:+[$extras]} into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            -e "$ROOT${extras:+[$extras]}"
        echo "$want" >"$stamp"
    fi
}
