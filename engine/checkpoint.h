// Named tensors to and from checkpoint files: safetensors (read and write) and PyTorch's
// torch.save zip format (read), so weights move between this engine and PyTorch by name.
#pragma once
#include <map>
#include <string>

#include "engine/tensor.h"

namespace hr {

// Writes the tensors (any device, dtype and memory format; stored row-major in PyTorch's
// logical layout) atomically: the file appears whole or not at all.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads a .safetensors file or a torch.save zip checkpoint (told apart by content, not by
// name) into CPU tensors, in file order. `metadata` receives the safetensors metadata.
NamedTensors load_checkpoint(const std::string& path,
                             std::map<std::string, std::string>* metadata = nullptr);

}  // namespace hr
