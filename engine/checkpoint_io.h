// Checkpoint files at the byte level, no Python at run time:
//  - safetensors: read through a read-only memory map with the header fully validated at open;
//    written atomically (temp file, fsync, rename).
//  - PyTorch .pth in the zip format torch.save writes since 1.6: a restricted unpickler that
//    rebuilds dicts, lists, scalars and tensors from an allow-list of globals and executes
//    nothing; tensors come out row-major contiguous.
// Errors throw hr::Error naming the file and, where there is one, the tensor key.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/dtype.h"

namespace hr::io {

// One tensor as row-major contiguous bytes. data points into memory owned by the reader that
// produced it (valid while that reader, or a copy of it, lives); nbytes == numel * dtype_size.
// data need not be aligned to the element size (files from other writers): read it with memcpy.
struct RawTensor {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;  // empty for a 0-d scalar
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// A .safetensors file. Tensors are listed in header order. Copies share the mapping.
class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path);
  const std::vector<RawTensor>& tensors() const { return tensors_; }
  const RawTensor* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::shared_ptr<const void> mapping_;
  std::vector<RawTensor> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes path.tmp.<pid>, fsyncs it, renames it onto path. Tensor data is laid out largest
// element size first (every tensor naturally aligned), header padded with spaces to a multiple
// of 8. On any failure the temp file is removed and hr::Error thrown; path is never half-written.
void write_safetensors(const std::string& path, const std::vector<RawTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// A torch.save zip checkpoint. The state dict is the top-level dict itself, or the dict under
// 'state_dict', 'model' or 'state_dict_ema' (first found, in that order). Its tensor entries
// are kept in pickle order with names as stored; non-tensor entries are ignored. Contiguous
// tensors point into the file's memory map, others are copied out contiguous. Copies share
// the buffers.
class PthReader {
 public:
  explicit PthReader(const std::string& path);
  const std::vector<RawTensor>& tensors() const { return tensors_; }
  const RawTensor* find(const std::string& name) const;
  const std::string& path() const { return path_; }
  // "" when the top-level dict is the state dict, else the key that held it.
  const std::string& state_dict_key() const { return state_dict_key_; }

 private:
  std::string path_;
  std::string state_dict_key_;
  std::shared_ptr<const void> mapping_;
  std::shared_ptr<std::vector<std::vector<uint8_t>>> owned_;
  std::vector<RawTensor> tensors_;
  std::map<std::string, size_t> index_;
};

namespace detail {

// A whole file mapped read-only; the mapping lives as long as any copy of `keep`.
struct MappedFile {
  std::shared_ptr<const void> keep;
  const uint8_t* data = nullptr;
  size_t size = 0;
};
// what: the error prefix ("[safetensors]", "[pth]"). An empty file maps to size 0, data null.
MappedFile map_file(const std::string& path, const char* what);

}  // namespace detail
}  // namespace hr::io
