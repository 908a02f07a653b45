#!/usr/bin/env bash
# One-step set-up: installs the Graphviz binary (for `archdsl draw`) and archdsl
# with its pinned dependencies. `bash setup.sh test` also installs the test extra.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v dot >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null) \
            || echo "setup: could not install graphviz; 'archdsl draw' to svg/png/pdf will not work" >&2
    else
        echo "setup: install Graphviz ('dot') yourself for 'archdsl draw' to svg/png/pdf" >&2
    fi
fi
extra=""
[ "${1:-}" = "test" ] && extra="[test]"
python -m pip install -q -c constraints.txt -e ".${extra}"
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
