#!/usr/bin/env bash
# Runs a command inside a Debian 13 (trixie) chroot that has Orthanc 1.12.7 and its
# Python plugin 5.0 (Python 3.13), with this repository bind-mounted at /src.
#
#   bash scripts/debian13.sh python3 -m pytest tests -q        # from the repository root
#
# The chroot is made once with debootstrap from the mirror that the host's apt uses (about
# 70 s, then about 20 s of apt) and kept in $DEBIAN13_ROOT; it is made again when the
# package list below changes. Everything the tests need comes from Debian's packages, so
# no pip runs inside it. Its mounts live in a private mount namespace and end with the command.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
ROOT=${DEBIAN13_ROOT:-/var/cache/orthanc-transfers/debian13}

PACKAGES=(orthanc orthanc-python orthanc-dicomweb python3-requests python3-urllib3
          python3-zstandard python3-pytest python3-pytest-timeout python3-pydicom
          python3-numpy python3-yaml python3-hypothesis python3-selenium
          python3-pkg-resources chromium chromium-driver mount procps ca-certificates)
STAMP="$ROOT/.orthanc-transfers-packages"
WANTED=$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -c1-16)

host_mirror() {   # the Debian mirror of the host's own apt sources (never hard-coded)
  local sources
  sources=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true)
  echo "$sources" | grep -Eo 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -1 | tr -d ' '
}

make_chroot() {
  local mirror
  mirror=$(host_mirror)
  [ -n "$mirror" ] || { echo "debian13.sh: no Debian mirror in the host's apt sources" >&2; exit 2; }
  command -v debootstrap >/dev/null || {
    apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q debootstrap
  }
  rm -rf "$ROOT" && mkdir -p "$(dirname "$ROOT")"
  debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    trixie "$ROOT" "$mirror" >"$ROOT.debootstrap.log" 2>&1 \
    || { tail -30 "$ROOT.debootstrap.log" >&2; exit 2; }
  echo "deb $mirror trixie main" >"$ROOT/etc/apt/sources.list"
  # Debian's packaging starts services on install; nothing may start inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d" && chmod +x "$ROOT/usr/sbin/policy-rc.d"
  { in_chroot apt-get update -q \
      && in_chroot env DEBIAN_FRONTEND=noninteractive \
           apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } >"$ROOT.apt.log" 2>&1 \
    || { tail -30 "$ROOT.apt.log" >&2; exit 2; }
  echo "$WANTED" >"$STAMP"
}

mount_all() {   # inside a private mount namespace: the mounts vanish with the command
  for fs in proc sys dev dev/pts; do
    mkdir -p "$ROOT/$fs" && mount --bind "/$fs" "$ROOT/$fs"
  done
  mkdir -p "$ROOT/dev/shm" "$ROOT/tmp" "$ROOT/src"
  mount -t tmpfs -o size=4g tmpfs "$ROOT/dev/shm"
  mount --bind "$REPO" "$ROOT/src"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
}
in_chroot() {
  unshare --mount --propagation private bash "$REPO/scripts/debian13.sh" --inside "$@"
}

if [ "${1:-}" = "--inside" ]; then
  shift
  mount_all
  exec chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 CI="${CI:-}" PYTHONDONTWRITEBYTECODE=1 /bin/sh -c 'cd /src && exec "$@"' sh "$@"
fi

if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANTED" ]; then
  echo "debian13.sh: making the Debian 13 chroot in $ROOT" >&2
  make_chroot
fi
in_chroot "$@"
