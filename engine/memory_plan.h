// Static memory planning: given buffers with sizes and lifetimes (allocation and release in
// program order), assign each an offset in one arena so that buffers alive at the same time
// never overlap, and report the arena size. The planner behind static-graph buffer reuse and
// the model summaries' "planned activation memory".
#pragma once
#include <cstdint>
#include <vector>

namespace hr {

class MemoryPlanner {
 public:
  // Records an allocation at the current step; returns its id. Sizes are rounded up to
  // `alignment` bytes in the plan.
  int64_t alloc(int64_t bytes);
  // Records the release of buffer `id` at the current step (buffers never released live to the end).
  void release(int64_t id);

  struct Plan {
    std::vector<int64_t> offsets;  // by buffer id
    int64_t arena_bytes = 0;       // the plan's footprint
    int64_t peak_live_bytes = 0;   // largest sum of simultaneously live buffers: a lower bound
    int64_t total_bytes = 0;       // every buffer's bytes: the footprint with no reuse
  };
  // Greedy by size (largest first), each buffer at the lowest offset where it overlaps no placed
  // buffer whose lifetime intersects its own; O(n^2) in the worst case, fine for graphs of a few
  // thousand buffers.
  Plan plan(int64_t alignment = 256) const;

  int64_t size() const { return static_cast<int64_t>(bufs_.size()); }

 private:
  struct Buf {
    int64_t bytes, start, end;  // lifetime [start, end)
  };
  std::vector<Buf> bufs_;
  int64_t step_ = 0;
};

}  // namespace hr
