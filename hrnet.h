// Umbrella header of the hrnet engine: tensors, autograd, ops, modules, optimizers, checkpoints,
// static graphs.
#pragma once
#include "engine/autograd.h"
#include "engine/checkpoint.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/graph.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/stream.h"
#include "engine/tensor.h"
