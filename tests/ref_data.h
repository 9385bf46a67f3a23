// Reference data written by the tools/gen_*_reference.py scripts: a safetensors file of tensors
// named "<case>/<role>" whose metadata holds one JSON object of options per case.
#pragma once
#include <catch2/catch.hpp>

#include <cstdlib>
#include <map>
#include <string>

#include "engine/checkpoint.h"

namespace hr::test {

class RefData {
 public:
  explicit RefData(const std::string& file) {
    for (auto& [k, v] : load_checkpoint(std::string(HR_TEST_DATA_DIR) + "/" + file, &meta_)) {
      t_[k] = v;
      if (k.rfind("state.", 0) == 0) state_.emplace_back(k.substr(6), v);
    }
  }
  const Tensor& at(const std::string& key) const {
    auto it = t_.find(key);
    INFO("reference tensor " << key);
    REQUIRE(it != t_.end());
    return it->second;
  }
  const Tensor& operator[](const std::string& key) const { return at(key); }
  bool has(const std::string& key) const { return t_.count(key) > 0; }
  // A model reference's state (tools/gen_*model*_reference.py): the "state." tensors, the prefix
  // removed, in file order.
  const NamedTensors& state() const { return state_; }
  // A metadata entry as written ("keys", "params" of the model references).
  const std::string& meta(const std::string& key) const {
    auto it = meta_.find(key);
    INFO("reference metadata " << key);
    REQUIRE(it != meta_.end());
    return it->second;
  }
  // The JSON text of `key` in case `c`'s options ("0.7", "[18, 36]", "true").
  std::string opt(const std::string& c, const std::string& key) const {
    auto m = meta_.find(c);
    INFO("reference case " << c << ", option " << key);
    REQUIRE(m != meta_.end());
    const std::string& s = m->second;
    const size_t p = s.find("\"" + key + "\": ");
    REQUIRE(p != std::string::npos);
    const size_t b = p + key.size() + 4;
    const size_t e = s[b] == '[' ? s.find(']', b) + 1 : s.find_first_of(",}", b);
    return s.substr(b, e - b);
  }
  double num(const std::string& c, const std::string& key) const {
    return std::strtod(opt(c, key).c_str(), nullptr);
  }
  bool flag(const std::string& c, const std::string& key) const { return opt(c, key) == "true"; }

 private:
  std::map<std::string, Tensor> t_;
  std::map<std::string, std::string> meta_;
  NamedTensors state_;
};

}  // namespace hr::test
