# Installs what building skein needs on Debian/Ubuntu (sourced by the other scripts).
# Everything comes from the distribution's packages, except Rust itself (rustup) when missing.

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: need root (or sudo) to run: $*" >&2; return 1; fi
}

apt_updated=""
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing ${missing[*]}"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

ensure_build_deps() {
  command -v cc >/dev/null || apt_install build-essential
  command -v pkg-config >/dev/null || apt_install pkg-config
  if ! command -v cargo >/dev/null; then
    [ -x "$HOME/.cargo/bin/cargo" ] || {
      apt_install curl ca-certificates
      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    }
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
}

# Node.js and npm build the dashboard's page (scripts/build-ui). A Node.js that is already
# installed (with its own npm) is kept; Debian's packages only when there is none.
ensure_node() {
  command -v node >/dev/null && command -v npm >/dev/null && return 0
  apt_install nodejs npm
}

# Debian's Chromium for the dashboard's browser test (crates/skein/tests/dashboard_browser.rs),
# driven by npm's playwright-core from ui/'s lockfile; no browser is ever downloaded.
install_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  apt_install chromium
}

# Prometheus for the mesh (skein runs it as istio-system/prometheus). Debian's package also
# starts a system-wide Prometheus on *:9090, now and at every boot; skein runs its own, so
# when this installs the package it keeps the package's service from starting (a
# policy-rc.d for the length of the install, unless one is already there) and disables it.
install_prometheus() {
  command -v prometheus >/dev/null && return 0
  local guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# skein: no service starts while prometheus is installed\nexit 101\n' |
      as_root tee /usr/sbin/policy-rc.d >/dev/null && as_root chmod 755 /usr/sbin/policy-rc.d &&
      guard=1
  fi
  local rc=0
  apt_install prometheus || rc=$?
  if [ -n "$guard" ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
  [ "$rc" -eq 0 ] || return "$rc"
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif command -v update-rc.d >/dev/null; then
    as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
}

# The tracing store's real-client test (crates/skein/tests/tracing.rs) sends spans with the
# OpenTelemetry Python SDK: its OTLP/HTTP exporter and its Zipkin v2 JSON exporter. They go
# into a virtualenv under target/ (ignored by git), not into the system's Python.
otel_python_venv="target/otel-python"
otel_python_packages=(
  "opentelemetry-sdk==1.45.2"
  "opentelemetry-exporter-otlp-proto-http==1.45.2"
  "opentelemetry-exporter-zipkin-json==1.45.1"
)
install_otel_python() {
  local py="$otel_python_venv/bin/python"
  if [ -x "$py" ] && "$py" -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, opentelemetry.exporter.zipkin.json' 2>/dev/null; then
    return 0
  fi
  command -v python3 >/dev/null || apt_install python3
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  echo "== installing the OpenTelemetry Python SDK into $otel_python_venv"
  python3 -m venv "$otel_python_venv"
  "$otel_python_venv/bin/pip" install --quiet --disable-pip-version-check "${otel_python_packages[@]}"
}
