#!/usr/bin/env bash
# Carry ONNX Runtime's CUDA provider (onnxruntime-gpu 1.31.1, CUDA 13, cp312) and, optionally,
# MobileStyleGAN's converted weights to a lent GPU machine that has no network and receives at
# most 64 MiB per call (working tree included), then run the GPU suite there.
#
# Here (network, in the checkout the GPU session calls the device from):
#   bash benchmarks/device/stage_ort_gpu.sh stage [--with-mobilestylegan] [--mode subset|wheel]
#       downloads the pinned wheel (pip download --no-deps --only-binary=:all: for cp312
#       manylinux x86_64), checks its sha256, packs it (subset: only what the CUDA provider loads,
#       xz; wheel: the wheel as published), splits every payload into parts sized to fit beside
#       the working tree, under the git-ignored .gpu-stage/parts/, and prints the device calls.
#   bash benchmarks/device/stage_ort_gpu.sh plan       # print the device calls again
# There (every call runs the same command; only `carry` changes):
#   bash benchmarks/device/stage_ort_gpu.sh receive --prewarm --then-suite "--budget 8m"
#       checks each carried part against MANIFEST (sha256), joins and installs every payload whose
#       parts are all there (sha256 of the whole, then: subset -> every file against the wheel's
#       RECORD; wheel -> pip install --no-deps --target), writes $PULSE_GPU_TARGET/env.sh
#       (PYTHONPATH, LD_LIBRARY_PATH for the image's nvidia-* libraries, PULSE_TRT_WEIGHTS), runs
#       a CUDA smoke session; --prewarm starts the suite's CPU-side work (kernel build, ONNX
#       exports) in the background once; --then-suite runs benchmarks/gpu_suite.sh with those
#       arguments as soon as every payload is installed. Parts may arrive in any order; a call
#       that finds parts missing says which.
# Helpers (tested on CPU, tests/benchmarks/test_stage_ort_gpu.py):
#   split FILE PART_BYTES DIR      -> DIR/<file>.part-01.. and one "part" line each on stdout
#   join DIR NAME OUT              -> OUT = cat DIR/NAME.part-* (in order)
#   tree-bytes                     -> bytes of the working tree that travels with every call
set -euo pipefail

ORT_VERSION=1.31.1
WHEEL=onnxruntime_gpu-${ORT_VERSION}-cp312-cp312-manylinux_2_28_x86_64.whl
WHEEL_SHA256=05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7
LIMIT=$((64 * 1024 * 1024))        # bytes a device call carries, working tree included
MARGIN=$((512 * 1024))             # room for the tree to grow between staging and the calls (plan re-checks)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STAGE_REL=.gpu-stage               # git-ignored (.gitignore); parts travel from here
STAGE=${PULSE_GPU_STAGE:-$REPO/$STAGE_REL}           # override for tests only
PARTS=$STAGE/parts
TARGET=${PULSE_GPU_TARGET:-/tmp/pulse-gpu-stage}   # on the GPU machine: site/, weights/, env.sh
WORK=${PULSE_SUITE_WORK:-/tmp/pulse-gpu-suite}     # the suite's work folder (prewarm status and log)
PY=${PYTHON:-python3}
PAYLOAD="$REPO/benchmarks/device/payload.py"

die() { echo "stage_ort_gpu: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
mib() { awk -v b="$1" -v u="${2:-1048576}" 'BEGIN {printf "%.1f", b / u}'; }

cmd_split() {  # FILE PART_BYTES DIR
  local file=$1 bytes=$2 dir=$3 name
  name=$(basename "$file")
  [ -f "$file" ] || die "split: no file $file"
  [ "$bytes" -gt 0 ] 2>/dev/null || die "split: part size must be a positive number of bytes"
  mkdir -p "$dir"
  rm -f "$dir/$name".part-*
  split -b "$bytes" -d -a 2 --numeric-suffixes=1 "$file" "$dir/$name.part-"
  for p in "$dir/$name".part-*; do
    echo "part $name $(basename "$p") $(sha "$p") $(size "$p")"
  done
}

cmd_join() {  # DIR NAME OUT
  local dir=$1 name=$2 out=$3
  compgen -G "$dir/$name.part-*" >/dev/null || die "join: no parts of $name in $dir"
  cat "$dir/$name".part-* > "$out.tmp" && mv "$out.tmp" "$out"
}

cmd_tree_bytes() {  # what travels with every call: tracked + untracked-not-ignored files, shared/
  (cd "$REPO" && {
    git ls-files -z -c -o --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null
    [ -d shared ] && git check-ignore -q shared && find shared -type f -printf '%s\n'
    true
  } | awk '{s += $1} END {print s + 0}')
}

manifest_bundles() { grep '^bundle ' "$PARTS/MANIFEST" || true; }
manifest_parts() { grep '^part ' "$PARTS/MANIFEST" || true; }

# -- here ----------------------------------------------------------------------------------------
cmd_stage() {
  local mode=subset with_msg=0 part_bytes=""
  while [ $# -gt 0 ]; do
    case $1 in
      --mode) mode=$2; shift 2 ;;
      --with-mobilestylegan) with_msg=1; shift ;;
      --part-bytes) part_bytes=$2; shift 2 ;;
      *) die "stage: unknown option $1" ;;
    esac
  done
  case $mode in subset|wheel) ;; *) die "stage: --mode is subset or wheel" ;; esac
  local tree
  tree=$(cmd_tree_bytes)
  [ -n "$part_bytes" ] || part_bytes=$((LIMIT - tree - MARGIN - 16384))
  [ "$part_bytes" -ge $((8 * 1024 * 1024)) ] || die "stage: the working tree ($tree bytes) leaves under 8 MiB per call"
  mkdir -p "$STAGE/download" "$PARTS"
  rm -f "$PARTS"/*
  local whl=$STAGE/download/$WHEEL
  if [ ! -f "$whl" ] || [ "$(sha "$whl")" != "$WHEEL_SHA256" ]; then
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$STAGE/download" "onnxruntime-gpu==$ORT_VERSION" \
      || die "stage: pip download of onnxruntime-gpu==$ORT_VERSION failed"
  fi
  [ "$(sha "$whl")" = "$WHEEL_SHA256" ] || die "stage: $WHEEL has sha256 $(sha "$whl"), expected $WHEEL_SHA256"
  {
    echo "# pulse-trt GPU stage v1: $(date -u +%Y-%m-%dT%H:%MZ), tree $tree bytes, parts of at most $part_bytes bytes"
    echo "# bundle NAME KIND FILE SHA256 BYTES; part NAME PARTFILE SHA256 BYTES"
  } > "$PARTS/MANIFEST.tmp"
  if [ $with_msg = 1 ]; then  # first: the prewarm (call 1) can then export mobilestylegan too
    local entry file=mobilestylegan-weights.tar
    entry=$("$PY" - <<'EOF'
from pulse_trt.export.generators import load_generator
from pulse_trt.weights import fetch
path = fetch("mobilestylegan", log=print)
load_generator("mobilestylegan", path)  # computes and caches the Gaussian fit beside the weights
print(path.parent)
EOF
) || die "stage: could not fetch the mobilestylegan weights (activate the venv with pulse-trt installed)"
    entry=$(echo "$entry" | tail -1)
    local prefix
    prefix="mobilestylegan/$(basename "$entry")"
    "$PY" "$PAYLOAD" weights "$entry" "$STAGE/$file" --prefix "$prefix" >&2
    echo "bundle weights weights $file $(sha "$STAGE/$file") $(size "$STAGE/$file")" >> "$PARTS/MANIFEST.tmp"
    cmd_split "$STAGE/$file" "$part_bytes" "$PARTS" | sed 's/^part [^ ]* /part weights /' >> "$PARTS/MANIFEST.tmp"
  fi
  local file kind
  if [ "$mode" = subset ]; then
    file=ort-gpu-$ORT_VERSION-subset.tar.xz kind=ort-subset
    if [ ! -f "$STAGE/$file" ] || [ "$STAGE/$file" -ot "$whl" ]; then
      echo "stage_ort_gpu: packing the CUDA-provider subset with xz -9 (a few minutes on 2 cores)" >&2
      "$PY" "$PAYLOAD" subset "$whl" "$STAGE/$file" >&2
    fi
  else
    file=$WHEEL kind=ort-wheel
    cp "$whl" "$STAGE/$file.tmp" && mv "$STAGE/$file.tmp" "$STAGE/$file"
  fi
  echo "bundle ort $kind $file $(sha "$STAGE/$file") $(size "$STAGE/$file")" >> "$PARTS/MANIFEST.tmp"
  cmd_split "$STAGE/$file" "$part_bytes" "$PARTS" | sed 's/^part [^ ]* /part ort /' >> "$PARTS/MANIFEST.tmp"
  mv "$PARTS/MANIFEST.tmp" "$PARTS/MANIFEST"
  [ "$mode" = wheel ] && rm -f "$STAGE/$file"   # the download is kept; no second copy
  cmd_plan
}

cmd_plan() {
  [ -f "$PARTS/MANIFEST" ] || die "plan: nothing staged; run: bash benchmarks/device/stage_ort_gpu.sh stage"
  local tree n=0 total biggest=0 suite_args=${SUITE_ARGS:---budget 8m}
  tree=$(cmd_tree_bytes)
  total=$(manifest_parts | wc -l)
  while read -r _ _ _ _ bytes; do [ "$bytes" -gt "$biggest" ] && biggest=$bytes; done < <(manifest_parts)
  echo "Staged under $STAGE_REL/parts (git-ignored):"
  manifest_bundles | while read -r _ name kind file digest bytes; do
    printf '  %-8s %-11s %s  %s MB  sha256 %s\n' "$name" "$kind" "$file" "$(mib "$bytes" 1000000)" "$digest"
  done
  echo "Each call carries the working tree ($(mib "$tree") MiB now) + MANIFEST + one part (at most $(mib "$biggest") MiB):" \
    "$(mib $((tree + biggest))) MiB of 64."
  if [ $((tree + biggest + 16384)) -gt $LIMIT ]; then
    echo "WARNING: the tree grew since staging: tree + largest part is over 64 MiB; stage again." >&2
  fi
  echo
  echo "Device calls ($total), back to back: a warm machine keeps the parts between calls but goes back"
  echo "after about 30 s idle, so send each call as soon as the last returns, without analysis between."
  echo "Every call runs the same command; parts may arrive in any order; the call that completes the last"
  echo "payload installs it and runs the suite. If a reply lists parts as missing that an earlier call"
  echo "sent, the machine was given back in between: send those again (nothing else changes)."
  echo
  local cmd="bash benchmarks/device/stage_ort_gpu.sh receive --prewarm --then-suite '$suite_args'"
  while read -r _ _ partfile _ _; do
    n=$((n + 1))
    echo "call $n of $total: run(command=\"$cmd\", carry=[\"$STAGE_REL/parts/MANIFEST\", \"$STAGE_REL/parts/$partfile\"], timeout_s=600)"
  done < <(manifest_parts)
  echo
  echo "Results: the last call's \$OUT (at most 8 files: suite.md, suite.json, rows.jsonl, suite.log,"
  echo "gpu_tests.log, prewarm.log, throughput.png). Give the machine back after it (give_back)."
}

# -- there ---------------------------------------------------------------------------------------
nvidia_lib_path() {  # the image's nvidia-* wheel folders holding what the CUDA provider loads (never libcuda)
  "$PY" - <<'EOF'
import glob, os, sys
want = ("libcublasLt.so", "libcublas.so", "libcudart.so", "libcurand.so", "libcufft.so", "libnvrtc.so", "libcudnn.so")
dirs = []
for p in sys.path:
    for d in sorted(glob.glob(os.path.join(p, "nvidia", "*", "lib"))):
        names = os.listdir(d)
        if d not in dirs and any(n.startswith(want) for n in names) and not any(n.startswith("libcuda.so") for n in names):
            dirs.append(d)
print(":".join(dirs))
EOF
}

write_env() {
  local libs
  libs=$(nvidia_lib_path)
  {
    echo "# written by benchmarks/device/stage_ort_gpu.sh receive; sourced by benchmarks/gpu_suite.sh"
    if [ -f "$TARGET/ort.installed" ]; then
      echo "export PYTHONPATH=$TARGET/site\${PYTHONPATH:+:\$PYTHONPATH}"
      [ -n "$libs" ] && echo "export LD_LIBRARY_PATH=$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
    fi
    [ -f "$TARGET/weights.installed" ] && echo "export PULSE_TRT_WEIGHTS=$TARGET/weights"
    true
  } > "$TARGET/env.sh"
}

install_bundle() {  # NAME KIND FILE SHA256
  local name=$1 kind=$2 file=$3 digest=$4 joined
  joined=$TARGET/tmp/$file
  mkdir -p "$TARGET/tmp"
  cmd_join "$PARTS" "$file" "$joined"
  [ "$(sha "$joined")" = "$digest" ] || { rm -f "$joined"; die "$file: sha256 of the joined parts differs from MANIFEST"; }
  case $kind in
    ort-subset)
      rm -rf "$TARGET/site"
      "$PY" "$PAYLOAD" extract "$joined" "$TARGET/site"
      "$PY" "$PAYLOAD" verify-subset "$TARGET/site" ;;
    ort-wheel)
      [ "$digest" = "$WHEEL_SHA256" ] || die "$file is not the pinned wheel"
      rm -rf "$TARGET/site"
      "$PY" -m pip install -q --no-deps --no-index --no-compile --no-cache-dir --target "$TARGET/site" "$joined" ;;
    weights)
      "$PY" "$PAYLOAD" extract "$joined" "$TARGET/weights"
      (cd "$TARGET/weights" && for s in */*/SHA256SUMS; do (cd "$(dirname "$s")" && sha256sum --quiet -c SHA256SUMS); done) \
        || die "weights: a file differs from its SHA256SUMS" ;;
    *) die "unknown bundle kind $kind" ;;
  esac
  rm -f "$joined"
  echo "$digest" > "$TARGET/$name.installed"
  echo "stage_ort_gpu: installed $name ($file, sha256 ok)"
}

cmd_receive() {
  local prewarm=0 suite="" missing=0 ok=0
  while [ $# -gt 0 ]; do
    case $1 in
      --prewarm) prewarm=1; shift ;;
      --then-suite) suite=$2; shift 2 ;;
      *) die "receive: unknown option $1" ;;
    esac
  done
  [ -f "$PARTS/MANIFEST" ] || die "receive: $STAGE_REL/parts/MANIFEST was not carried (carry it in every call)"
  mkdir -p "$TARGET"
  local have=() lack=() bad=()
  while read -r _ _ partfile digest bytes; do
    if [ ! -f "$PARTS/$partfile" ]; then lack+=("$partfile")
    elif [ "$(size "$PARTS/$partfile")" != "$bytes" ] || [ "$(sha "$PARTS/$partfile")" != "$digest" ]; then
      bad+=("$partfile"); rm -f "$PARTS/$partfile"
    else have+=("$partfile"); fi
  done < <(manifest_parts)
  echo "stage_ort_gpu: parts present ${#have[@]} of $(manifest_parts | wc -l)${lack[*]:+; missing: ${lack[*]}}${bad[*]:+; CORRUPT (removed, send again): ${bad[*]}}"
  while read -r _ name kind file digest _; do
    if [ -f "$TARGET/$name.installed" ] && [ "$(cat "$TARGET/$name.installed")" = "$digest" ]; then ok=$((ok + 1)); continue; fi
    local complete=1
    for p in "${lack[@]}" "${bad[@]}"; do [[ $p == "$file".part-* ]] && complete=0; done
    if [ $complete = 1 ]; then install_bundle "$name" "$kind" "$file" "$digest" && ok=$((ok + 1)); else missing=$((missing + 1)); fi
  done < <(manifest_bundles)
  write_env
  if [ -f "$TARGET/ort.installed" ] && [ ! -f "$TARGET/smoke.ok" ]; then
    # shellcheck disable=SC1091
    if (. "$TARGET/env.sh" && "$PY" "$PAYLOAD" smoke); then touch "$TARGET/smoke.ok"; fi
  fi
  if [ $prewarm = 1 ]; then
    # the suite's CPU-side work, in a session of its own so it outlives this call on a warm machine
    if [ -f "$WORK/prewarm.pid" ] && kill -0 "$(cat "$WORK/prewarm.pid")" 2>/dev/null; then
      echo "stage_ort_gpu: prewarm running (pid $(cat "$WORK/prewarm.pid"))"
    elif [ ! -f "$WORK/prewarm.json" ]; then
      mkdir -p "$WORK"
      (cd "$REPO" && setsid nohup bash benchmarks/gpu_suite.sh --prewarm > "$WORK/prewarm.log" 2>&1 < /dev/null &
       echo $! > "$WORK/prewarm.pid")
      echo "stage_ort_gpu: prewarm started (kernel build, ONNX exports; log $WORK/prewarm.log)"
    fi
  fi
  if [ $missing -gt 0 ]; then
    echo "stage_ort_gpu: $missing payload(s) incomplete: send the missing parts"
    return 0
  fi
  echo "stage_ort_gpu: every payload installed ($ok); env: $TARGET/env.sh"
  if [ -n "$suite" ]; then
    # shellcheck disable=SC2086
    exec bash "$REPO/benchmarks/gpu_suite.sh" $suite
  fi
}

case ${1:-} in
  stage) shift; cmd_stage "$@" ;;
  plan) shift; cmd_plan ;;
  receive) shift; cmd_receive "$@" ;;
  split) shift; cmd_split "$@" ;;
  join) shift; cmd_join "$@" ;;
  tree-bytes) cmd_tree_bytes ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
