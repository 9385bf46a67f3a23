// Compiled by the ctest entries "layering_*" (tests/CMakeLists.txt) with a layer's include root
// only: from the core's it must fail (the core cannot see models/), from the models layer's it
// must compile.
#include "engine/tensor.h"
#include "models/hrnet.h"

int main() { return 0; }
