// Whole-file writes that never leave a half-written file: the bytes go to a temp file in the
// target's directory (unique per process and call), which is renamed over the target; on any
// failure the temp file is removed. Large streaming writers with fsync (safetensors) and the
// streaming JSON writer (data/coco.cpp) have their own; this serves small outputs.
#pragma once
#include <cstddef>
#include <string>

namespace hr {

// Throws hr::Error "<what>: <reason>" (what names the file, e.g. "cannot write image x.png").
void write_file_atomic(const std::string& path, const void* data, size_t size,
                       const std::string& what);

// s as a JSON string literal, quotes included (", \ and control characters escaped).
std::string json_quote(const std::string& s);

}  // namespace hr
