// The resampling ops (engine/ops/resample.cpp), as the graph pass that fuses a nearest
// upsampling into the add consuming it sees them (fuse_upsample_add).
#pragma once
#include "engine/op.h"

namespace hr::ops {

// For a nearest upsampling `up` (upsample_nearest, upsample_nearest_scale): the op computing
// r + up(x) in one pass over the output ("upsample_nearest_add": inputs x and r, the output
// shaped as r; CPU only), the fuse layers' sums without the upsampled map written and read back.
// Null for any other op.
OpPtr upsample_add_op(const OpDef& up);

}  // namespace hr::ops
