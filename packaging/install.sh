#!/usr/bin/env bash
# Install mcphost as a systemd service: the mcphost system user, a venv in
# /opt/mcphost/venv with mcphost and the bundled plugins, the units, the default config
# and the credentials. Safe to run again: it upgrades the packages and the units and never
# overwrites the config or the credentials.
#
#   packaging/install.sh                       # from PyPI
#   packaging/install.sh --source .            # from this checkout
#   packaging/install.sh --wheelhouse DIR      # offline, from wheels made with `pip wheel -w DIR ...`
#
# MCPHOST_ROOT=/some/dir installs under that directory instead of / (to inspect or test
# the result); the venv made there only runs in place.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: packaging/install.sh [--source DIR | --wheelhouse DIR] [--plugin SPEC]... [--python PYTHON] [--pip-arg ARG]...

  --source DIR       install mcphost and the bundled plugins from a checkout (DIR,
                     DIR/plugins/mcphost-sysinfo, DIR/plugins/mcphost-files)
  --wheelhouse DIR   install from the wheels in DIR only, without an index (they must
                     include every dependency: pip wheel -w DIR . ./plugins/*)
                     default: install mcphost, mcphost-sysinfo, mcphost-files from PyPI
  --plugin SPEC      also install this plugin (a pip requirement or path); repeatable
  --python PYTHON    interpreter the venv is made with (default python3; 3.11 or later)
  --pip-arg ARG      pass ARG to pip install; repeatable (e.g. --pip-arg=--index-url=URL)

environment:
  MCPHOST_ROOT       install under this directory instead of / (default /)
EOF
}

source_dir=""
wheelhouse=""
python="python3"
plugins=()
pip_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --source) source_dir=${2:?--source needs a directory}; shift 2 ;;
        --source=*) source_dir=${1#*=}; shift ;;
        --wheelhouse) wheelhouse=${2:?--wheelhouse needs a directory}; shift 2 ;;
        --wheelhouse=*) wheelhouse=${1#*=}; shift ;;
        --plugin) plugins+=("${2:?--plugin needs a requirement}"); shift 2 ;;
        --plugin=*) plugins+=("${1#*=}"); shift ;;
        --python) python=${2:?--python needs an interpreter}; shift 2 ;;
        --python=*) python=${1#*=}; shift ;;
        --pip-arg) pip_args+=("${2:?--pip-arg needs an argument}"); shift 2 ;;
        --pip-arg=*) pip_args+=("${1#*=}"); shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument: $1" >&2; usage >&2; exit 64 ;;
    esac
done

die() {
    echo "install.sh: $*" >&2
    exit 1
}
step() {
    echo "==> $*"
}

[ -n "$source_dir" ] && [ -n "$wheelhouse" ] && die "--source and --wheelhouse exclude each other"
if [ -n "$source_dir" ]; then
    [ -f "$source_dir/pyproject.toml" ] || die "$source_dir is not an mcphost checkout (no pyproject.toml)"
    source_dir=$(cd "$source_dir" && pwd)
fi
if [ -n "$wheelhouse" ]; then
    [ -d "$wheelhouse" ] || die "$wheelhouse is not a directory"
    wheelhouse=$(cd "$wheelhouse" && pwd)
fi

# The units and the default config come from the checkout this script is in.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=${MCPHOST_ROOT:-/}
root=${root%/}
relocated=false
if [ -n "$root" ]; then
    relocated=true
    mkdir -p "$root"
    root=$(cd "$root" && pwd)
fi
if ! $relocated && [ "$(id -u)" -ne 0 ]; then
    die "run as root (or set MCPHOST_ROOT to install under another directory)"
fi

venv="$root/opt/mcphost/venv"
etc="$root/etc/mcphost"
credentials="$etc/credentials"
units="$root/etc/systemd/system"
bin="$root/usr/local/bin"
man="$root/usr/local/share/man"

# Whatever the caller's umask, the venv, the units and the config must be readable by the
# mcphost user and by systemd; the secrets are written under umask 077 below.
umask 022

step "system user mcphost"
install -D -m 0644 "$here/packaging/mcphost.sysusers" "$root/etc/sysusers.d/mcphost.conf"
if command -v systemd-sysusers >/dev/null; then
    # --root keeps a relocated install away from the host's user database.
    systemd-sysusers --root="${root:-/}" "$root/etc/sysusers.d/mcphost.conf"
elif $relocated; then
    echo "systemd-sysusers not found: create the user on the target system from $root/etc/sysusers.d/mcphost.conf"
elif ! getent passwd mcphost >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/mcphost --no-create-home \
        --shell /usr/sbin/nologin --comment "mcphost MCP host" mcphost
fi

step "venv $venv"
if [ ! -x "$venv/bin/python" ]; then
    command -v "$python" >/dev/null || die "$python not found; pass --python"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$python is older than 3.11"
    # Debian and Ubuntu ship venv's pip bootstrap separately.
    "$python" -c 'import ensurepip' 2>/dev/null || die "$python cannot make venvs: apt-get install python3-venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$venv has a Python older than 3.11"

step "packages"
packages=()
if [ -n "$source_dir" ]; then
    packages=("$source_dir" "$source_dir/plugins/mcphost-sysinfo" "$source_dir/plugins/mcphost-files")
elif [ -n "$wheelhouse" ]; then
    pip_args+=(--no-index --find-links "$wheelhouse")
    packages=(mcphost mcphost-sysinfo mcphost-files)
else
    packages=(mcphost mcphost-sysinfo mcphost-files)
fi
# --upgrade: running the script again installs the newer release (dependencies are
# upgraded only when the new release needs it).
"$venv/bin/python" -m pip install --upgrade --disable-pip-version-check --root-user-action=ignore \
    --progress-bar=off "${pip_args[@]}" "${packages[@]}" "${plugins[@]}"
"$venv/bin/mcphost" --version

step "command $bin/mcphost"
# The operator's commands (check-config, keys, plugins, status) on root's PATH. A mcphost
# there that is not this link (another installation) is left alone.
if [ ! -e "$bin/mcphost" ] || [ "$(readlink "$bin/mcphost")" = /opt/mcphost/venv/bin/mcphost ]; then
    mkdir -p "$bin"
    ln -sfn /opt/mcphost/venv/bin/mcphost "$bin/mcphost"
else
    echo "kept (not a link to /opt/mcphost/venv/bin/mcphost): use $venv/bin/mcphost"
fi

step "man pages in $man"
# mcphost(1) and mcphost.toml(5), generated from the command's parser and the config models.
install -D -m 0644 "$here/packaging/man/mcphost.1" "$man/man1/mcphost.1"
install -D -m 0644 "$here/packaging/man/mcphost.toml.5" "$man/man5/mcphost.toml.5"

step "units in $units"
# Always replaced: local changes belong in drop-ins (systemctl edit mcphost.service).
install -D -m 0644 "$here/systemd/mcphost.socket" "$units/mcphost.socket"
install -D -m 0644 "$here/systemd/mcphost.service" "$units/mcphost.service"

step "config $etc/mcphost.toml"
install -d -m 0755 "$etc"
if [ -e "$etc/mcphost.toml" ]; then
    echo "kept (exists)"
else
    install -m 0644 "$here/etc/mcphost.toml" "$etc/mcphost.toml"
fi

step "credentials in $credentials"
# Root's alone: systemd copies them for the service (LoadCredential=) into a directory
# only the mcphost user can read.
install -d -m 0700 "$credentials"
(
    umask 077
    if [ ! -e "$credentials/session-secret" ]; then
        # 32 random bytes, hex: the key session ids are signed with.
        od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$credentials/session-secret"
        echo "created session-secret"
    fi
    if [ ! -e "$credentials/keys.toml" ]; then
        cat >"$credentials/keys.toml" <<'EOF'
# API keys for mcphost, read when mcphost.toml has [auth] credential = "keys.toml".
# Add the lines `mcphost keys new NAME --tools 'PATTERN'` prints, then restart mcphost.
[keys]
EOF
        echo "created keys.toml (no keys)"
    fi
)

step "check-config"
# The same credentials the service will see, so a config that reads keys.toml is checked too.
CREDENTIALS_DIRECTORY="$credentials" "$venv/bin/mcphost" check-config "$etc/mcphost.toml" ||
    die "$etc/mcphost.toml is invalid (see above); fix it before starting mcphost"

if ! $relocated && [ -d /run/systemd/system ]; then
    step "systemctl daemon-reload"
    systemctl daemon-reload
    if systemctl is-active --quiet mcphost.service; then
        echo "mcphost is running the previous version: systemctl restart mcphost.service"
    fi
else
    echo "==> systemd is not running here (or MCPHOST_ROOT is set): skipped systemctl daemon-reload"
fi

cat <<EOF

mcphost is installed. Next:
  edit /etc/mcphost/mcphost.toml, then check it with the credentials the service gets:
    CREDENTIALS_DIRECTORY=/etc/mcphost/credentials mcphost check-config /etc/mcphost/mcphost.toml
  systemctl enable --now mcphost.socket mcphost.service
  systemctl status mcphost.service; journalctl -u mcphost.service
  /opt/mcphost/venv/bin/pip install PLUGIN    # then reload: new tools are served when it returns
  systemctl reload mcphost.service    # after editing the config (checked first) or adding a plugin
  systemctl stop mcphost.socket mcphost.service    # maintenance: the socket would start it again
  systemd-analyze security mcphost.service
EOF
