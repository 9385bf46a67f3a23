#include "engine/memory_plan.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "engine/error.h"

namespace hr {

int64_t MemoryPlanner::alloc(int64_t bytes) {
  HR_CHECK(bytes >= 0, "MemoryPlanner: negative size ", bytes);
  bufs_.push_back({bytes, step_++, std::numeric_limits<int64_t>::max()});
  return static_cast<int64_t>(bufs_.size()) - 1;
}

void MemoryPlanner::release(int64_t id) {
  HR_CHECK(id >= 0 && id < size(), "MemoryPlanner: unknown buffer ", id);
  HR_CHECK(bufs_[id].end == std::numeric_limits<int64_t>::max(), "MemoryPlanner: buffer ", id,
           " released twice");
  bufs_[id].end = step_++;
}

MemoryPlanner::Plan MemoryPlanner::plan(int64_t alignment) const {
  Plan p;
  const size_t n = bufs_.size();
  p.offsets.assign(n, 0);
  std::vector<int64_t> size(n);
  for (size_t i = 0; i < n; ++i) {
    size[i] = (bufs_[i].bytes + alignment - 1) / alignment * alignment;
    p.total_bytes += size[i];
  }
  // peak of simultaneously live bytes: sweep the events in program order
  {
    std::vector<std::pair<int64_t, int64_t>> ev;  // (step, +/- bytes)
    for (size_t i = 0; i < n; ++i) {
      ev.emplace_back(bufs_[i].start, size[i]);
      if (bufs_[i].end != std::numeric_limits<int64_t>::max()) ev.emplace_back(bufs_[i].end, -size[i]);
    }
    std::sort(ev.begin(), ev.end());
    int64_t live = 0;
    for (auto& [step, d] : ev) p.peak_live_bytes = std::max(p.peak_live_bytes, live += d);
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return size[a] > size[b]; });
  std::vector<size_t> placed;
  std::vector<std::pair<int64_t, int64_t>> busy;  // [offset, offset+size) of conflicting buffers
  for (size_t i : order) {
    busy.clear();
    for (size_t j : placed)
      if (bufs_[j].start < bufs_[i].end && bufs_[i].start < bufs_[j].end)
        busy.emplace_back(p.offsets[j], p.offsets[j] + size[j]);
    std::sort(busy.begin(), busy.end());
    int64_t off = 0;
    for (auto& [b, e] : busy) {
      if (off + size[i] <= b) break;  // fits in the gap before this one
      off = std::max(off, e);
    }
    p.offsets[i] = off;
    p.arena_bytes = std::max(p.arena_bytes, off + size[i]);
    placed.push_back(i);
  }
  return p;
}

}  // namespace hr
