#!/usr/bin/env bash
# Pack the run folders of a GPU session into at most a few files for the device tool's $OUT
# (8 files of at most 16 MiB come back): one .tar.gz per run, split into 15 MiB parts.
# Runs named in LIGHT (space-separated) keep only their records (json, csv, png, log).
# Usage: bash scripts/pack_runs.sh RUNS_ROOT DEST
#   unpack here with: cat DEST/NAME.tgz.part* | tar -xz -C RUNS_ROOT
set -u
root=${1:?runs root}; dest=${2:?destination}
mkdir -p "$dest"
for dir in "$root"/*/; do
  name=$(basename "$dir")
  [ "$name" = jax_cache ] && continue
  if [[ " ${LIGHT:-} " == *" $name "* ]]; then
    (cd "$root" && tar -czf - "$name"/*.json "$name"/*.csv "$name"/*.png "$name.log" 2>/dev/null) \
      > "$dest/$name.records.tgz"
  else
    (cd "$root" && tar -czf - --exclude='*.npz' "$name" "$name.log" 2>/dev/null) \
      | split -b 15m -d - "$dest/$name.tgz.part"
  fi
done
ls -la "$dest"
