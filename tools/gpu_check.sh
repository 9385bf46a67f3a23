#!/usr/bin/env bash
# Replaced by the GPU window kit (tools/window/): here `tools/window/pack.sh` builds the CUDA
# programs and packs them into .window/; then one device call runs `tools/window/run.sh $OUT`
# with carry [".window"] (docs/PERFORMANCE.md, "Running on a GPU"). Kept as the kit's device
# half for old notes: tools/gpu_check.sh OUTDIR. Without a kit, run.sh builds the programs on
# the device first (minutes).
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/window/run.sh" "$@"
