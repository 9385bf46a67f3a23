#include "engine/file_util.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "engine/error.h"

namespace hr {

void write_file_atomic(const std::string& path, const void* data, size_t size,
                       const std::string& what) {
  // Same directory as the target so that rename is atomic; unique per process and call.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = str_cat(path, ".tmp.", long(::getpid()), ".", counter.fetch_add(1));
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(str_cat(what, ": ", std::strerror(errno)));
  const bool wrote = std::fwrite(data, 1, size, f) == size;
  int e = errno;
  const bool closed = std::fclose(f) == 0;
  if (!closed && wrote) e = errno;
  if (!wrote || !closed) {
    std::remove(tmp.c_str());
    throw Error(str_cat(what, ": ", std::strerror(e)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    e = errno;
    std::remove(tmp.c_str());
    throw Error(str_cat(what, ": ", std::strerror(e)));
  }
}

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      static const char* hex = "0123456789abcdef";
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace hr
