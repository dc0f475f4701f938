#!/bin/sh
# Install the Debian packages the real-runtime tests need (tests/rig), once.
#
# Idempotent: when every package is already installed it neither updates the
# package lists nor installs anything. Needs root (apt-get), as the tests do.
#
# The runtimes must never run on the machine's own paths: the tests start
# containerd and podman only inside private test nodes. Installing the
# containerd package on a systemd machine would enable and start
# containerd.service on /var/lib/containerd, so service starts are refused
# during the install with a temporary policy-rc.d (exit 101, the Debian
# convention), and afterwards the script checks that no containerd runs on
# the machine's paths and says so if one does.
set -eu

PACKAGES="containerd runc umoci debootstrap podman golang-go golang-github-coreos-bbolt-dev zsh fish"
POLICY=/usr/sbin/policy-rc.d

# Packages not yet installed (dpkg says "install ok installed" for those that are).
missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing="$missing $pkg"
done

# kubectl: usually on the machine image already; apt only when it has a candidate.
if ! command -v kubectl >/dev/null 2>&1; then
    missing="$missing kubectl"
fi

if [ -z "$missing" ]; then
    echo "install-system-deps: all present ($PACKAGES kubectl)"
else
    echo "install-system-deps: installing:$missing"
    apt-get update -q

    # Drop kubectl from the list when apt has no candidate for it.
    if echo "$missing" | grep -qw kubectl; then
        if apt-cache policy kubectl | grep -q 'Candidate: (none)' \
            || [ -z "$(apt-cache policy kubectl)" ]; then
            echo "install-system-deps: no kubectl package in apt; install it another way" >&2
            missing=$(echo "$missing" | sed 's/\bkubectl\b//')
        fi
    fi

    # Refuse service starts while installing, unless a policy already exists.
    own_policy=""
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY"
        chmod 755 "$POLICY"
        own_policy=1
    fi
    # shellcheck disable=SC2086  # the list is meant to split into words
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing \
        || { [ -n "$own_policy" ] && rm -f "$POLICY"; exit 1; }
    [ -n "$own_policy" ] && rm -f "$POLICY"
fi

# Check that no containerd runs on the machine's own paths (none should run at all
# outside test nodes; those run in private mount namespaces).
host_mnt=$(readlink /proc/self/ns/mnt)
found=0
for exe in /proc/[0-9]*/exe; do
    pid=${exe#/proc/}; pid=${pid%/exe}
    case "$(readlink "$exe" 2>/dev/null || true)" in
        */containerd) ;;
        *) continue ;;
    esac
    if [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$host_mnt" ]; then
        echo "install-system-deps: WARNING: containerd (pid $pid) runs on the machine's" \
            "own paths; stop it (e.g. systemctl disable --now containerd)" >&2
        found=1
    fi
done
if [ -d /var/lib/containerd ] || [ -S /run/containerd/containerd.sock ]; then
    echo "install-system-deps: note: /var/lib/containerd or /run/containerd exists on" \
        "the machine; the tests never use them" >&2
fi
[ "$found" = 0 ] && echo "install-system-deps: no containerd runs on the machine's paths"
exit 0
