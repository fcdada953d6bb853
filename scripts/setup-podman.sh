#!/usr/bin/env bash
# Make a Debian machine without a Docker engine (and possibly without an image registry) able to build and run
# tabserve's Dockerfiles with podman; .ci/run calls it before the container tests (tests/deploy/test_image.py).
#   1. installs podman, buildah, runc, debootstrap (Debian packages)
#   2. writes $WORK/containers.conf (runc instead of crun, ulimits within the host's hard limits)
#   3. when python:3.11-slim is neither local nor pullable, builds a local Debian bookworm + python3 base image
#      and tags it python:3.11-slim, so "FROM python:3.11-slim" resolves locally.
# Idempotent: a second run reuses the base image (about 10 s); a first run takes about 90 s.
# Afterwards, every shell that uses podman needs:  export CONTAINERS_CONF=$WORK/containers.conf
# (the tests set it themselves when the file exists).
# Knobs: WORK (default /tmp/ctr), MIRROR (default: the first Debian mirror in apt's sources), REBUILD_BASE=1.
# Notes: container HEALTHCHECK timers need systemd (absent on CI machines): `podman healthcheck run NAME`.
#        The docker CLI can drive podman through `podman system service` (DOCKER_HOST=unix://...).
#        Needs root (apt-get, rootful podman). On a machine with Docker, none of this is needed.
set -euo pipefail

WORK=${WORK:-/tmp/ctr}
MIRROR=${MIRROR:-$(grep -hoE "^URIs: *[^ ]+/debian$" /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | sed "s/^URIs: *//")}
[ -n "$MIRROR" ] || MIRROR=$(grep -hoE "^deb +[^ ]+/debian " /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')
[ -n "$MIRROR" ] || { echo "set MIRROR to a Debian mirror URL" >&2; exit 1; }
BASE_IMAGE=localhost/debian-python:bookworm
mkdir -p "$WORK"
cd "$WORK"

t0=$(date +%s)
ts() { echo "[$(( $(date +%s) - t0 ))s] $*"; }

# ---------------------------------------------------------------- 1. packages
ts "apt-get install podman buildah runc debootstrap"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -q --no-install-recommends \
    podman buildah runc crun conmon netavark aardvark-dns \
    containernetworking-plugins fuse-overlayfs slirp4netns uidmap iptables \
    catatonit debootstrap ca-certificates curl >/dev/null

# ------------------------------------------------------- 2. containers.conf
# * crun 1.8 refuses this kernel's hybrid cgroup layout ("cgroups in hybrid
#   mode not supported, drop all controllers from cgroupv2") -> use runc.
# * podman's default ulimits (nofile=1048576, nproc=4194304) need
#   CAP_SYS_RESOURCE, which this VM lacks ("setrlimit RLIMIT_NOFILE: Operation
#   not permitted"); podman itself caps its own nproc at 32768.
NOFILE=$(ulimit -Hn); [ "$NOFILE" = unlimited ] && NOFILE=1048576
NPROC=$(ulimit -Hu);  { [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 32768 ]; } && NPROC=32768
cat > "$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=${NOFILE}:${NOFILE}", "nproc=${NPROC}:${NPROC}"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$WORK/containers.conf"
podman info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}} cgroup{{.Host.CgroupsVersion}}'

# --------------------------------------------------------- 3. base image
OFFICIAL=docker.io/library/python:3.11-slim
if [ "${REBUILD_BASE:-0}" != 1 ] && ! podman image exists "$BASE_IMAGE"; then
    # The real image when a registry answers; the local stand-in only when none does.
    if podman image exists "$OFFICIAL" || timeout 120 podman pull -q "$OFFICIAL" >/dev/null 2>&1; then
        ts "ready: export CONTAINERS_CONF=$WORK/containers.conf; base image $OFFICIAL"
        exit 0
    fi
fi
if [ "${REBUILD_BASE:-0}" = 1 ] || ! podman image exists "$BASE_IMAGE"; then
    ts "debootstrap bookworm minbase + python3"
    R="$WORK/rootfs"
    rm -rf "$R"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
        bookworm "$R" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; exit 1; }
    # Trust the same extra CAs as the host (a TLS-intercepting
    # proxy), otherwise pip inside the build fails with CERTIFICATE_VERIFY_FAILED.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$R/usr/local/share/ca-certificates/"
    fi
    chroot "$R" /bin/sh -ec '
        update-ca-certificates >/dev/null
        apt-get clean
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/*
        # behave like python:3.11-slim: plain "pip install" allowed
        rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
        : > /etc/resolv.conf'
    ts "import rootfs as $BASE_IMAGE"
    tar --numeric-owner -C "$R" -cf "$WORK/debian-python-bookworm.tar" .
    podman import \
        --change 'CMD ["python3"]' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
        "$WORK/debian-python-bookworm.tar" "$BASE_IMAGE" >/dev/null 2>&1
    rm -rf "$R" "$WORK/debian-python-bookworm.tar"
fi
# Let unmodified "FROM python:3.11-slim" Dockerfiles resolve to the local image
# (it is Debian's CPython 3.11.2 in /usr/bin, not the official image).
podman tag "$BASE_IMAGE" "$OFFICIAL"

ts "ready: export CONTAINERS_CONF=$WORK/containers.conf; base image $BASE_IMAGE (also tagged python:3.11-slim)"
