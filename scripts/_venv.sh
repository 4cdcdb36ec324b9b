# Shared by scripts/run and scripts/test: find Python >= 3.11, create .venv, install the project.
# Sourced, not executed. Installs again only when pyproject.toml changes or an extra that is not
# installed yet is asked for (pip never removes extras, so a venv with more is fine).
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

# The flags llama-cpp-python must be built with here: the default native build (-march=native,
# AVX-512 where the compiler sees it) crashed on the machines we test on. Exported only while
# installing the local-model extra; set CMAKE_ARGS yourself to override.
LLAMA_CPP_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF"

# Whether the comma-separated list $1 holds every extra of the comma-separated list $2.
has_extras() {
    local have=",$1," extra
    local IFS=,
    for extra in $2; do
        case "$have" in *",$extra,"*) ;; *) return 1 ;; esac
    done
}

ensure_venv() {
    local extras="$1" python stamp hash installed="" previous=""
    if [ ! -x "$VENV/bin/python" ]; then
        python="$(find_python)"
        echo "==> creating virtual environment in $VENV with $python"
        "$python" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
    fi
    stamp="$VENV/.shareai-install"
    hash="$(sha256sum <"$ROOT/pyproject.toml" | cut -d' ' -f1)"
    if [ -f "$stamp" ]; then
        installed="$(cat "$stamp")"
        # Same pyproject.toml and at least the extras asked for: nothing to do.
        if [ "${installed%% *}" = "$hash" ]; then
            installed="${installed#*extras=[}"
            previous="${installed%]}"
            if has_extras "$previous" "$extras"; then
                return 0
            fi
        fi
    fi
    if has_extras "$extras" "local-model"; then
        export CMAKE_ARGS="${CMAKE_ARGS:-$LLAMA_CPP_CMAKE_ARGS}"
        if ! "$VENV/bin/python" -c 'import llama_cpp' >/dev/null 2>&1; then
            echo "==> the local-model extra builds llama-cpp-python from source with CMAKE_ARGS=\"$CMAKE_ARGS\""
            echo "    (about 5 minutes on 2 cores when pip has no wheel of it cached yet)"
        fi
    fi
    echo "==> installing shareai${extras:+[$extras]} into $VENV"
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -e "$ROOT${extras:+[$extras]}"; then
        echo "error: could not install shareai${extras:+[$extras]} into $VENV (pip's error is above)" >&2
        if has_extras "$extras" "local-model"; then
            echo "error: (the local-model extra builds llama-cpp-python from source: it needs a C/C++ compiler and cmake)" >&2
        fi
        exit 1
    fi
    if has_extras "$extras" "local-model"; then
        # Load the llama.cpp library and find the model file: a broken build fails here, loudly.
        if ! "$VENV/bin/python" -c 'import llama_cpp.server.app; from shareai.local_model import check_local_model; check_local_model()'; then
            echo "error: the local-model extra is installed but does not work (see above);" \
                "rebuild it: CMAKE_ARGS=\"$LLAMA_CPP_CMAKE_ARGS\" $VENV/bin/pip install --force-reinstall --no-cache-dir llama-cpp-python" >&2
            exit 1
        fi
    fi
    # Record what is installed now: these extras and those installed before from the same file.
    local all="" extra joined="$previous,$extras" IFS=,
    for extra in $joined; do
        if [ -n "$extra" ] && ! has_extras "$all" "$extra"; then
            all="${all:+$all,}$extra"
        fi
    done
    echo "$hash extras=[$all]" >"$stamp"
}
