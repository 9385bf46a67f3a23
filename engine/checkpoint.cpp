// Tensor <-> checkpoint file glue over engine/checkpoint_io.h.
#include "engine/checkpoint.h"

#include <cstring>
#include <fstream>

#include "engine/checkpoint_io.h"

namespace hr {

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<Tensor> host;  // keeps the host copies alive while writing
  std::vector<io::RawTensor> raw;
  host.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    HR_CHECK(t.defined(), "save_safetensors: ", path, ": tensor '", name, "' is undefined");
    Tensor h = t.device().is_cpu() ? t.contiguous() : t.to(Device::cpu()).contiguous();
    host.push_back(h);
    io::RawTensor r;
    r.name = name;
    r.dtype = h.dtype();
    r.shape = h.shape();
    r.data = static_cast<const uint8_t*>(h.raw_data());
    r.nbytes = h.nbytes();
    raw.push_back(std::move(r));
  }
  io::write_safetensors(path, raw, metadata);
}

namespace {
NamedTensors copy_out(const std::vector<io::RawTensor>& raw) {
  NamedTensors out;
  out.reserve(raw.size());
  for (const auto& r : raw) {
    Tensor t = Tensor::empty(r.shape, r.dtype);
    if (r.nbytes) std::memcpy(t.raw_data(), r.data, r.nbytes);
    out.emplace_back(r.name, t);
  }
  return out;
}
}  // namespace

NamedTensors load_checkpoint(const std::string& path, std::map<std::string, std::string>* metadata) {
  char magic[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  {
    std::ifstream f(path, std::ios::binary);
    HR_CHECK(f.good(), "load_checkpoint: cannot open ", path);
    f.read(magic, 9);
  }
  // safetensors: an 8-byte header length, then the JSON header ('{'); its length may begin with
  // any byte, 0x80 included. Else torch.save's zip (since 1.6), or the legacy pickle stream
  // (0x80 PROTO, protocol 2..5) that PthReader names.
  const bool safetensors = magic[8] == '{';
  const auto proto = static_cast<unsigned char>(magic[1]);
  if (!safetensors && (std::memcmp(magic, "PK\x03\x04", 4) == 0 ||
                       (static_cast<unsigned char>(magic[0]) == 0x80 && proto >= 2 && proto <= 5))) {
    io::PthReader r(path);
    if (metadata) metadata->clear();
    return copy_out(r.tensors());
  }
  io::SafetensorsReader r(path);
  if (metadata) *metadata = r.metadata();
  return copy_out(r.tensors());
}

}  // namespace hr
