// Static graphs: recording (engine/graph/graph.h), the compiler's passes
// (engine/graph/passes.h) and compiled execution (engine/graph/executable.h).
#pragma once
#include "engine/graph/executable.h"
#include "engine/graph/graph.h"
