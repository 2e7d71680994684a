# shellcheck shell=bash
# Shared helpers for scripts/*. Source this file; it defines functions only.

# ensure_debian_packages PKG...
# Installs whichever of the given Debian packages are missing (apt-get, with
# sudo when not running as root). Does nothing if all are already installed.
ensure_debian_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        # dpkg-query, not `dpkg -s | grep -q`: under pipefail, grep -q's early exit could end
        # dpkg with SIGPIPE on a long status entry, and an installed package looked missing.
        if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi

    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    echo "==> Installing missing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
}
