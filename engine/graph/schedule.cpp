// Pass: streams, positions, vector clocks and the event edges between streams.
#include <algorithm>
#include <map>

#include "engine/graph/passes.h"

namespace hr::graph {

Schedule schedule(GraphIR& g, bool streams, const std::vector<char>& skip) {
  auto& nodes = g.nodes;
  const size_t N = nodes.size();
  HR_CHECK(N >= 2 && std::string(nodes.back().op->name()) == "end",
           "graph schedule: the last node must be the end node");
  // dense stream ids; 0 stays the main stream, the start and end nodes run on it
  std::map<int, int> ids{{0, 0}};
  for (const Node& n : nodes)
    if (!ids.count(n.stream)) {
      const int k = static_cast<int>(ids.size());
      ids[n.stream] = k;
    }
  for (Node& n : nodes) n.stream = streams ? ids[n.stream] : 0;
  nodes.front().stream = nodes.back().stream = 0;

  Schedule s;
  s.streams = streams ? static_cast<int>(ids.size()) : 1;
  const int S = s.streams;
  s.pos.assign(N, 0);
  s.vc_in.assign(N, std::vector<int>(S, 0));
  s.waits.assign(N, {});
  s.records.assign(N, 0);
  auto skipped = [&](int i) { return !skip.empty() && skip[i]; };
  std::vector<std::vector<int>> vc_after(N);
  std::vector<int> last(S, -1), count(S, 0);
  for (size_t i = 0; i < N; ++i) {
    if (skipped(static_cast<int>(i))) continue;
    const Node& n = nodes[i];
    const int st = n.stream;
    std::vector<int> vc = last[st] >= 0 ? vc_after[last[st]] : std::vector<int>(S, 0);
    auto join = [&](int p) {
      if (p < 0 || static_cast<size_t>(p) == i || skipped(p)) return;
      const int ps = nodes[p].stream;
      if (ps == st || vc[ps] >= s.pos[p]) return;  // already ordered
      for (int k = 0; k < S; ++k) vc[k] = std::max(vc[k], vc_after[p][k]);
      s.waits[i].push_back(p);
      s.records[p] = 1;
    };
    if (i > 0 && last[st] < 0) join(0);  // a side stream's first node waits for the start
    if (i + 1 == N)
      for (int k = 0; k < S; ++k) join(last[k]);
    for (V v : n.in)
      if (v >= 0) join(g.values[v].producer);
    s.vc_in[i] = vc;
    s.pos[i] = ++count[st];
    vc[st] = s.pos[i];
    vc_after[i] = vc;
    last[st] = static_cast<int>(i);
  }
  for (char r : s.records) s.events += r;
  return s;
}

}  // namespace hr::graph
