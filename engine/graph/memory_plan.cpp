// Pass: the memory plan. Every activation and input gets an offset in one arena; two values share
// bytes only when the accesses of one all happen before the other is defined.
#include <algorithm>
#include <map>
#include <numeric>

#include "engine/graph/passes.h"

namespace hr::graph {

namespace {

int64_t rounded(int64_t bytes, int64_t align) {
  return std::max<int64_t>(align, (bytes + align - 1) / align * align);
}

bool planned(const Value& v) {
  return v.kind == ValueKind::Activation || v.kind == ValueKind::Input;
}

int64_t value_bytes(const Value& v) {
  return shape_numel(v.shape) * static_cast<int64_t>(dtype_size(v.dtype));
}

}  // namespace

std::vector<int64_t> pack_buffers(const std::vector<int64_t>& bytes,
                                  const std::function<bool(size_t, size_t)>& conflict,
                                  int64_t align, int64_t* arena_bytes) {
  std::vector<size_t> order(bytes.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return bytes[a] > bytes[b]; });
  std::vector<int64_t> offset(bytes.size(), -1);
  std::vector<size_t> placed;
  int64_t arena = 0;
  for (size_t b : order) {
    const int64_t size = rounded(bytes[b], align);
    std::vector<std::pair<int64_t, int64_t>> taken;
    for (size_t p : placed)
      if (conflict(p, b)) taken.emplace_back(offset[p], offset[p] + rounded(bytes[p], align));
    std::sort(taken.begin(), taken.end());
    int64_t at = 0;
    for (const auto& [lo, hi] : taken) {
      if (lo >= at + size) break;
      at = std::max(at, hi);
    }
    offset[b] = at;
    arena = std::max(arena, at + size);
    placed.push_back(b);
  }
  if (arena_bytes) *arena_bytes = arena;
  return offset;
}

MemoryPlan plan_memory(const GraphIR& g, const Schedule& s, const std::vector<char>& persistent) {
  const auto& nodes = g.nodes;
  const int S = s.streams;
  struct Buf {
    V v;
    int def;
    std::vector<int> last;  // per stream: latest position of an access (0: none)
    int first_order, last_order;
    bool keep;              // inputs and prologue outputs: never shared
    bool constant;          // a prologue output
  };
  std::vector<int> buf_of(g.values.size(), -1);
  std::vector<Buf> bufs;
  auto touch = [&](V v, int node) {
    if (v < 0 || !planned(g.values[v])) return;
    if (buf_of[v] < 0) {
      buf_of[v] = static_cast<int>(bufs.size());
      const int def = g.values[v].producer;
      const bool constant = !persistent.empty() && def >= 0 && persistent[def];
      const bool keep = constant || g.values[v].kind == ValueKind::Input;
      bufs.push_back(Buf{v, def, std::vector<int>(S, 0), node, node, keep, constant});
    }
    Buf& b = bufs[buf_of[v]];
    const int st = nodes[node].stream;
    b.last[st] = std::max(b.last[st], s.pos[node]);
    b.first_order = std::min(b.first_order, node);
    b.last_order = std::max(b.last_order, node);
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (V v : nodes[i].out) touch(v, static_cast<int>(i));
    for (V v : nodes[i].in) touch(v, static_cast<int>(i));
  }
  // a's accesses all happen before b's definition
  auto before = [&](const Buf& a, const Buf& b) {
    const auto& vc = s.vc_in[b.def];
    for (int k = 0; k < S; ++k)
      if (a.last[k] > vc[k]) return false;
    return true;
  };
  std::vector<int64_t> bytes;
  for (const Buf& b : bufs) bytes.push_back(value_bytes(g.values[b.v]));
  const int64_t align = 256;
  MemoryPlan p;
  const std::vector<int64_t> off = pack_buffers(
      bytes,
      [&](size_t a, size_t b) {
        return bufs[a].keep || bufs[b].keep || (!before(bufs[a], bufs[b]) && !before(bufs[b], bufs[a]));
      },
      align, &p.arena_bytes);
  p.offset.assign(g.values.size(), -1);
  for (size_t i = 0; i < bufs.size(); ++i) {
    p.offset[bufs[i].v] = off[i];
    p.total_bytes += rounded(bytes[i], align);
    if (bufs[i].constant) p.persistent_bytes += rounded(bytes[i], align);
  }
  // most bytes alive at once in program order
  std::vector<int64_t> delta(nodes.size() + 1, 0);
  for (size_t i = 0; i < bufs.size(); ++i) {
    const int64_t size = rounded(bytes[i], align);
    delta[bufs[i].keep ? 0 : bufs[i].first_order] += size;
    delta[bufs[i].keep ? nodes.size() : bufs[i].last_order + 1] -= size;
  }
  int64_t live = 0;
  for (int64_t d : delta) p.peak_live_bytes = std::max(p.peak_live_bytes, live += d);
  return p;
}

void verify_plan(const GraphIR& g, const Schedule& s, const MemoryPlan& p) {
  const auto& nodes = g.nodes;
  std::map<V, std::vector<int>> acc;  // accesses per planned value
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (V v : nodes[i].out)
      if (v >= 0 && p.offset[v] >= 0) acc[v].push_back(static_cast<int>(i));
    for (V v : nodes[i].in)
      if (v >= 0 && p.offset[v] >= 0) acc[v].push_back(static_cast<int>(i));
  }
  auto all_before = [&](V a, V b) {
    const int def = g.values[b].producer;
    for (int x : acc[a])
      if (!s.before(g, x, def)) return false;
    return true;
  };
  std::vector<V> vs;
  for (const auto& [v, a] : acc) vs.push_back(v);
  for (size_t i = 0; i < vs.size(); ++i)
    for (size_t j = i + 1; j < vs.size(); ++j) {
      const V a = vs[i], b = vs[j];
      const int64_t a0 = p.offset[a], a1 = a0 + value_bytes(g.values[a]);
      const int64_t b0 = p.offset[b], b1 = b0 + value_bytes(g.values[b]);
      if (a1 <= b0 || b1 <= a0) continue;
      HR_CHECK(all_before(a, b) || all_before(b, a), "graph plan: values %", a, " and %", b,
               " share arena bytes but their accesses are not ordered");
    }
}

}  // namespace hr::graph
