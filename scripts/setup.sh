#!/usr/bin/env bash
# Installs everything the project needs on Debian 12 (run as root): Orthanc 1.10 and
# its Python plugin from Debian, the plugin's own dependencies (python3-urllib3 and, for
# adaptive encoding, python3-zstandard, for /usr/bin/python3 inside Orthanc), Chromium for
# the browser test, and the Python development tools for the tests, the demo and the
# benchmark. Debian 13 runs in a chroot of its own: scripts/debian13.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(orthanc orthanc-python orthanc-dicomweb python3-urllib3 python3-zstandard
              chromium chromium-driver)
missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  # Debian's packaging starts an Orthanc service on install; this project starts its own.
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[dev]'
