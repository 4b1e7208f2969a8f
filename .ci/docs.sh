#!/usr/bin/env bash
# The documentation checks, end to end: validate docs-cms/, compare the
# reference pages with the code, test the validators, build the site, and
# visit the built site in headless Chromium. Screenshots of the visited pages
# go to artifacts/docs/ (git-ignored). Run by .ci/run; runs alone too:
#
#   bash .ci/docs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> docs: %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

step "tools"
command -v uv >/dev/null 2>&1 || pip install --quiet uv
uv --version
node --version
chromium=${CHROMIUM_PATH:-/usr/bin/chromium}
if [ ! -x "$chromium" ] || ! command -v chromedriver >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
fi
"$chromium" --version

step "validate docs-cms"
uv run --locked tooling/validate_docs.py

step "reference pages match the code"
uv run --locked tooling/check_reference.py

step "tests of the doc tools and the Python client example"
# The interop group brings grpcio and grpcio-tools: the client example of
# docs-cms/guides/clients.md is generated, imported and run by a test.
uv run --locked --group interop pytest -q tooling/tests

step "site dependencies"
cd "$root/docusaurus"
npm ci --no-audit --no-fund

step "site build"
npm run build

step "browser check"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
./node_modules/.bin/docusaurus serve --dir build --host 127.0.0.1 --port "$port" --no-open >/tmp/prism-docs-serve.log 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat /tmp/prism-docs-serve.log >&2; echo "the static server exited" >&2; exit 1; }
    sleep 0.5
done
CHROMIUM_PATH="$chromium" node scripts/browser-check.mjs --url "http://127.0.0.1:$port" --out "$root/artifacts/docs"
