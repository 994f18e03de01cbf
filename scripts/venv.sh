# shellcheck shell=bash
# Sourced by scripts/serve and scripts/test: make a virtualenv and install into it, but only
# when what it would install changed since the last install. The stamp of the inputs is the
# interpreter's version, the pip arguments and every local project's pyproject.toml (its
# version and dependencies); the projects are installed editable, so their sources are live.

# prepare_venv DIR LABEL PIP-ARGS...
prepare_venv() {
    local venv=$1 label=$2
    shift 2
    if [ ! -x "$venv/bin/python" ]; then
        echo "mcphost: creating $venv" >&2
        "${PYTHON:-python3}" -m venv "$venv"
    fi
    local stamp
    stamp=$(
        "$venv/bin/python" -VV
        printf '%s\n' "$@"
        for arg in "$@"; do
            local project=${arg%%\[*}
            if [ -f "$project/pyproject.toml" ]; then cat "$project/pyproject.toml"; fi
        done
    )
    stamp=$(printf '%s' "$stamp" | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$venv/.mcphost-stamp" 2>/dev/null)" = "$stamp" ]; then
        return
    fi
    echo "mcphost: installing $label into $venv (the first time takes a few minutes)" >&2
    "$venv/bin/python" -m pip install --disable-pip-version-check "$@" >&2
    echo "$stamp" >"$venv/.mcphost-stamp"
    echo "mcphost: $venv is ready; later runs skip this until a pyproject.toml changes" >&2
}
