// safetensors: strict reader over a memory map (own JSON parser for the header) and an atomic
// writer. Layout: u64 little-endian header length N, N bytes of JSON, then the data buffer that
// the tensors' data_offsets (relative to the buffer start) must cover exactly, without overlap.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "engine/checkpoint_io.h"
#include "engine/error.h"
#include "engine/file_util.h"

namespace hr::io {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the limit the reference implementation uses
constexpr int kMaxJsonDepth = 64;

[[noreturn]] void fail(const std::string& path, const std::string& msg) {
  throw Error("[safetensors] " + path + ": " + msg);
}

// A parsed JSON value. Objects keep their keys in file order.
struct JVal {
  enum Kind : uint8_t { Null, Bool, Num, Str, Arr, Obj } kind = Null;
  bool b = false;
  std::string s;                  // Str: decoded UTF-8; Num: the literal text
  std::vector<JVal> items;        // Arr: elements; Obj: values
  std::vector<std::string> keys;  // Obj: keys, parallel to items
};

const char* kind_name(JVal::Kind k) {
  switch (k) {
    case JVal::Null: return "null";
    case JVal::Bool: return "a boolean";
    case JVal::Num: return "a number";
    case JVal::Str: return "a string";
    case JVal::Arr: return "an array";
    case JVal::Obj: return "an object";
  }
  return "?";
}

// RFC 8259 JSON, strict: no trailing commas, no comments, no duplicate keys, depth <= 64.
class JsonParser {
 public:
  JsonParser(const char* begin, const char* end, size_t file_offset, const std::string& path)
      : begin_(begin), p_(begin), end_(end), file_offset_(file_offset), path_(path) {}

  JVal document() {
    ws();
    JVal v = value(0);
    ws();
    if (p_ != end_) error("unexpected data after the top-level value");
    return v;
  }

 private:
  [[noreturn]] void error(const std::string& what) {
    std::string where = str_cat("invalid JSON header at file byte ", file_offset_ + (p_ - begin_));
    if (!last_key_.empty()) where += " (after key '" + last_key_ + "')";
    fail(path_, where + ": " + what);
  }
  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  void expect(char c) {
    if (p_ >= end_) error(str_cat("expected '", c, "', got end of header"));
    if (*p_ != c) error(str_cat("expected '", c, "', got '", *p_, "'"));
    ++p_;
  }
  bool literal(const char* word) {
    size_t n = std::strlen(word);
    if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return false;
    p_ += n;
    return true;
  }

  JVal value(int depth) {
    if (depth > kMaxJsonDepth) error("nesting deeper than 64");
    if (p_ >= end_) error("expected a value, got end of header");
    JVal v;
    char c = *p_;
    if (c == '{') {
      v.kind = JVal::Obj;
      ++p_;
      ws();
      if (p_ < end_ && *p_ == '}') {
        ++p_;
        return v;
      }
      std::set<std::string> seen;
      for (;;) {
        ws();
        if (p_ >= end_ || *p_ != '"') error("expected a string key");
        std::string key = string();
        if (!seen.insert(key).second) error("duplicate key '" + key + "'");
        last_key_ = key;
        ws();
        expect(':');
        ws();
        v.items.push_back(value(depth + 1));
        v.keys.push_back(std::move(key));
        ws();
        if (p_ < end_ && *p_ == ',') {
          ++p_;
          continue;
        }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = JVal::Arr;
      ++p_;
      ws();
      if (p_ < end_ && *p_ == ']') {
        ++p_;
        return v;
      }
      for (;;) {
        ws();
        v.items.push_back(value(depth + 1));
        ws();
        if (p_ < end_ && *p_ == ',') {
          ++p_;
          continue;
        }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = JVal::Str;
      v.s = string();
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = JVal::Num;
      v.s = number();
      return v;
    }
    if (literal("true")) {
      v.kind = JVal::Bool;
      v.b = true;
      return v;
    }
    if (literal("false")) {
      v.kind = JVal::Bool;
      return v;
    }
    if (literal("null")) return v;
    error(str_cat("unexpected character '", c, "'"));
  }

  std::string number() {
    const char* start = p_;
    auto digits = [&] {
      const char* d = p_;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      if (p_ == d) error("malformed number");
    };
    if (*p_ == '-') ++p_;
    if (p_ < end_ && *p_ == '0') {
      ++p_;
    } else {
      digits();
    }
    if (p_ < end_ && *p_ == '.') {
      ++p_;
      digits();
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      digits();
    }
    return std::string(start, p_);
  }

  unsigned hex4() {
    if (end_ - p_ < 4) error("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      char h = *p_++;
      v <<= 4;
      if (h >= '0' && h <= '9') v |= h - '0';
      else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
      else error("bad hex digit in \\u escape");
    }
    return v;
  }

  static void put_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string string() {
    ++p_;  // opening quote
    std::string out;
    for (;;) {
      if (p_ >= end_) error("unterminated string");
      unsigned char c = static_cast<unsigned char>(*p_++);
      if (c == '"') return out;
      if (c < 0x20) error("control character in string");
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      if (p_ >= end_) error("unterminated escape");
      char e = *p_++;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) error("lone low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') error("lone high surrogate");
            p_ += 2;
            unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) error("bad low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          put_utf8(out, cp);
          break;
        }
        default: error(str_cat("bad escape '\\", e, "'"));
      }
    }
  }

  const char* begin_;
  const char* p_;
  const char* end_;
  size_t file_offset_;
  const std::string& path_;
  std::string last_key_;
};

// A non-negative JSON integer (no sign, fraction or exponent) that fits in int64.
bool to_index(const JVal& v, uint64_t& out) {
  if (v.kind != JVal::Num || v.s.empty() || v.s.size() > 19) return false;
  uint64_t r = 0;
  for (char c : v.s) {
    if (c < '0' || c > '9') return false;
    r = r * 10 + static_cast<uint64_t>(c - '0');
  }
  if (r > static_cast<uint64_t>(INT64_MAX)) return false;
  out = r;
  return true;
}

bool parse_dtype(const std::string& s, DType& t) {
  static const std::pair<const char*, DType> table[] = {
      {"F32", DType::f32}, {"F16", DType::f16}, {"BF16", DType::bf16},
      {"I64", DType::i64}, {"U8", DType::u8}};
  for (const auto& e : table)
    if (s == e.first) {
      t = e.second;
      return true;
    }
  return false;
}

const char* dtype_tag(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
  }
  return "?";
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

struct Span {
  uint64_t begin, end;
  size_t tensor;
};

}  // namespace

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  detail::MappedFile m = detail::map_file(path, "[safetensors]");
  mapping_ = m.keep;
  if (m.size < 8)
    fail(path, str_cat("file is ", m.size, " bytes, too short for the 8-byte header length (truncated?)"));
  const uint64_t n = read_le64(m.data);
  if (n > m.size - 8)
    fail(path, str_cat("header length ", n, " exceeds the ", m.size - 8,
                       " bytes after the length field (file truncated or not safetensors)"));
  if (n > kMaxHeaderBytes) fail(path, str_cat("header length ", n, " exceeds the 100 MiB limit"));
  if (n < 2) fail(path, str_cat("header length ", n, " is too small for a JSON object"));

  const char* hb = reinterpret_cast<const char*>(m.data + 8);
  JVal root = JsonParser(hb, hb + n, 8, path).document();
  if (root.kind != JVal::Obj) fail(path, str_cat("header is ", kind_name(root.kind), ", expected an object"));

  const uint8_t* buf = m.data + 8 + n;
  const uint64_t buf_size = m.size - 8 - n;
  std::vector<Span> spans;
  for (size_t k = 0; k < root.keys.size(); ++k) {
    const std::string& key = root.keys[k];
    const JVal& v = root.items[k];
    if (key == "__metadata__") {
      if (v.kind != JVal::Obj)
        fail(path, str_cat("key '__metadata__' is ", kind_name(v.kind), ", expected an object of strings"));
      for (size_t i = 0; i < v.keys.size(); ++i) {
        if (v.items[i].kind != JVal::Str)
          fail(path, str_cat("key '__metadata__': value of '", v.keys[i], "' is ",
                             kind_name(v.items[i].kind), ", expected a string"));
        metadata_[v.keys[i]] = v.items[i].s;
      }
      continue;
    }
    auto bad = [&](const std::string& msg) { fail(path, "tensor '" + key + "': " + msg); };
    if (v.kind != JVal::Obj) bad(str_cat("entry is ", kind_name(v.kind), ", expected an object"));
    const JVal *dt = nullptr, *shape = nullptr, *offs = nullptr;
    for (size_t i = 0; i < v.keys.size(); ++i) {
      if (v.keys[i] == "dtype") dt = &v.items[i];
      else if (v.keys[i] == "shape") shape = &v.items[i];
      else if (v.keys[i] == "data_offsets") offs = &v.items[i];
      else bad("unknown field '" + v.keys[i] + "'");
    }
    if (!dt || !shape || !offs) bad("needs the fields dtype, shape and data_offsets");
    if (dt->kind != JVal::Str) bad(str_cat("dtype is ", kind_name(dt->kind), ", expected a string"));

    RawTensor t;
    t.name = key;
    if (!parse_dtype(dt->s, t.dtype))
      bad("dtype '" + dt->s + "' is not supported (supported: F32, F16, BF16, I64, U8)");
    if (shape->kind != JVal::Arr) bad(str_cat("shape is ", kind_name(shape->kind), ", expected an array"));
    const uint64_t esize = dtype_size(t.dtype);
    uint64_t numel = 1;
    for (const JVal& d : shape->items) {
      uint64_t dim = 0;
      if (!to_index(d, dim))
        bad(d.kind == JVal::Num ? "shape entry '" + d.s + "' is not a non-negative integer"
                                : str_cat("shape entry is ", kind_name(d.kind), ", expected an integer"));
      t.shape.push_back(static_cast<int64_t>(dim));
      if (dim != 0 && numel > (uint64_t(1) << 62) / esize / dim)
        bad("shape " + shape_str(t.shape) + " overflows");
      numel *= dim;
    }
    if (offs->kind != JVal::Arr || offs->items.size() != 2) bad("data_offsets must be an array [begin, end]");
    uint64_t b = 0, e = 0;
    if (!to_index(offs->items[0], b) || !to_index(offs->items[1], e))
      bad("data_offsets entries must be non-negative integers");
    if (b > e) bad(str_cat("data_offsets [", b, ", ", e, "] end before they begin"));
    if (e > buf_size)
      bad(str_cat("data_offsets [", b, ", ", e, "] exceed the data buffer of ", buf_size,
                  " bytes (file truncated?)"));
    if (e - b != numel * esize)
      bad(str_cat("shape ", shape_str(t.shape), " of dtype ", dt->s, " needs ", numel * esize,
                  " bytes but data_offsets [", b, ", ", e, "] span ", e - b));
    t.data = buf + b;
    t.nbytes = static_cast<size_t>(e - b);
    spans.push_back({b, e, tensors_.size()});
    index_[key] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const Span* prev = nullptr;
  for (const Span& s : spans) {
    const std::string& key = tensors_[s.tensor].name;
    if (s.begin < covered)
      fail(path, str_cat("tensor '", key, "': data_offsets [", s.begin, ", ", s.end,
                         "] overlap tensor '", tensors_[prev->tensor].name, "' [", prev->begin,
                         ", ", prev->end, "]"));
    if (s.begin > covered)
      fail(path, str_cat("tensor '", key, "': data_offsets [", s.begin, ", ", s.end,
                         "] leave a gap: bytes [", covered, ", ", s.begin, ") belong to no tensor"));
    covered = s.end;
    prev = &s;
  }
  if (covered != buf_size)
    fail(path, str_cat("tensors cover ", covered, " bytes but the data buffer has ", buf_size,
                       " (trailing bytes)"));
}

const RawTensor* SafetensorsReader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

void write_all(int fd, const void* data, size_t n, const std::string& tmp) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t(1) << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(str_cat("write to ", tmp, " failed: ", std::strerror(errno)));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

std::string parent_dir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<RawTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string what = "[safetensors] write " + path + ": ";
  std::set<std::string> names;
  for (const RawTensor& t : tensors) {
    HR_CHECK(!t.name.empty(), what, "a tensor has an empty name");
    HR_CHECK(t.name != "__metadata__", what, "'__metadata__' is reserved, not a tensor name");
    HR_CHECK(names.insert(t.name).second, what, "duplicate tensor name '", t.name, "'");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      HR_CHECK(d >= 0, what, "tensor '", t.name, "' has negative shape ", shape_str(t.shape));
      HR_CHECK(d == 0 || numel <= (uint64_t(1) << 62) / static_cast<uint64_t>(d), what, "tensor '",
               t.name, "' has shape ", shape_str(t.shape), ", too large");
      numel *= static_cast<uint64_t>(d);
    }
    HR_CHECK(numel * dtype_size(t.dtype) == t.nbytes, what, "tensor '", t.name, "' of shape ",
             shape_str(t.shape), " and dtype ", dtype_name(t.dtype), " needs ",
             numel * dtype_size(t.dtype), " bytes, got nbytes ", t.nbytes);
    HR_CHECK(t.data || t.nbytes == 0, what, "tensor '", t.name, "' has null data");
  }

  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].dtype) > dtype_size(tensors[b].dtype);
  });

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& kv : metadata) {
      header += (first ? "" : ",") + json_quote(kv.first) + ":" + json_quote(kv.second);
      first = false;
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (size_t i : order) {
    const RawTensor& t = tensors[i];
    if (header.size() > 1) header += ",";
    header += json_quote(t.name) + ":{\"dtype\":\"" + dtype_tag(t.dtype) + "\",\"shape\":[";
    for (size_t d = 0; d < t.shape.size(); ++d) header += (d ? "," : "") + std::to_string(t.shape[d]);
    header += str_cat("],\"data_offsets\":[", offset, ",", offset + t.nbytes, "]}");
    offset += t.nbytes;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t(header.size()) >> (8 * i));

  const std::string tmp = str_cat(path, ".tmp.", ::getpid());
  ::unlink(tmp.c_str());  // a stale temp of an earlier process with the same pid
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  HR_CHECK(fd >= 0, what, "cannot create temp file ", tmp, ": ", std::strerror(errno));
  try {
    write_all(fd, len, 8, tmp);
    write_all(fd, header.data(), header.size(), tmp);
    for (size_t i : order) write_all(fd, tensors[i].data, tensors[i].nbytes, tmp);
    if (::fsync(fd) != 0) throw Error(str_cat("fsync of ", tmp, " failed: ", std::strerror(errno)));
    int rc = ::close(fd);
    fd = -1;
    if (rc != 0) throw Error(str_cat("close of ", tmp, " failed: ", std::strerror(errno)));
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw Error(str_cat("rename of ", tmp, " failed: ", std::strerror(errno)));
  } catch (const Error& e) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(what + e.what());
  }
  // Make the rename itself durable; the file is complete either way, so failure is not fatal.
  int dfd = ::open(parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace hr::io
