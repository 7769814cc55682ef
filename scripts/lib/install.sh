# Sourced by the scripts that install what a fresh machine lacks (the README's test command must
# pass on one): Debian packages and PyPI packages, each only when the caller found it missing.

# Runs a command as root: directly when root (CI, this project's machines), else through sudo.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# apt_install PACKAGE...: Debian packages (the package lists are updated first: a fresh machine
# may have none).
apt_install() {
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# pip_install SPEC: one package from PyPI, e.g. 'playwright>=1.45,<2'.
pip_install() { python3 -m pip install --quiet --disable-pip-version-check "$1"; }
