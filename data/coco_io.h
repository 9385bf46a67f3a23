// Internal to data/: the reading and writing machinery the COCO files share (data/coco.cpp:
// keypoints, results, detections; data/boxes.cpp: instances, box results). Not part of the API.
// Reading: the file is loaded once (plus simdjson's padding); a small scanner finds the root's
// keys and the spans of the array elements, and simdjson's DOM parser parses and validates each
// record on its own, so its buffers stay the size of one record (a whole-file parse would add
// 4-12 bytes per byte of the 250 MB train file). Every error is one line naming the file (and the
// record). A reader states its record's fields in a table (field<&T::member>("key"), read by the
// member's type; read_record). Writing: one record per line, numbers in their shortest
// round-trip form, temp file + rename.
#pragma once
#include <fcntl.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <simdjson.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "data/coco.h"
#include "engine/error.h"

namespace hr::data::coco_io {

namespace dom = simdjson::dom;
inline constexpr size_t npos = static_cast<size_t>(-1);

// ---------------------------------------------------------------------------------------------
// Reading

// The whole file followed by SIMDJSON_PADDING bytes, and its name for error messages.
struct Source {
  std::string path;
  simdjson::padded_string text;
  const char* data() const { return text.data(); }
  size_t size() const { return text.size(); }
  [[noreturn]] void fail(const std::string& msg) const {
    throw Error(str_cat("[coco] ", path, ": ", msg));
  }
};

Source read_source(const std::string& path);

struct Span {
  size_t begin = 0, end = 0;  // [begin, end) in the source
};

// Names a value in messages: `text`, or `text[index]` for an array element. Formatted only when
// an error is reported, so the 380k records of the train file cost no string building.
struct Name {
  std::string_view text;
  size_t index = npos;
  std::string str() const {
    return index == npos ? std::string(text) : str_cat(text, "[", index, "]");
  }
};

// What simdjson says about the bytes [begin, end) (which are followed by readable padding or
// more of the file): its error text, or "" when they are one valid JSON value.
std::string simdjson_verdict(const Source& src, size_t begin, size_t end);

// The JSON structure above the records: the root's members and the elements of its arrays. It
// checks the brackets, strings and separators it walks over; simdjson validates each value.
class Scanner {
 public:
  explicit Scanner(const Source& src) : src_(src), p_(src.data()), n_(src.size()) {}

  size_t skip_ws(size_t i) const {
    while (i < n_ && (p_[i] == ' ' || p_[i] == '\n' || p_[i] == '\r' || p_[i] == '\t')) ++i;
    return i;
  }

  // The root value must be `open` ('{' or '['); returns the position after it.
  size_t expect_root(char open) const {
    const size_t i = skip_ws(0);
    if (i == n_) src_.fail("empty file (only whitespace)");
    if (p_[i] != open) {
      src_.fail(str_cat("malformed JSON: expected ", open == '{' ? "an object" : "an array",
                        " at the top level, found '", p_[i], "' at byte ", i));
    }
    return i + 1;
  }

  // After the root value only whitespace may follow.
  void expect_end(size_t i) const {
    i = skip_ws(i);
    if (i != n_)
      src_.fail(str_cat("malformed JSON: content after the top-level value at byte ", i));
  }

  // Members of the root object opened before `i`: fn(key, start of the value) returns the end
  // of the value. Returns the position after the closing '}'.
  template <class F>
  size_t object_members(size_t i, F&& fn) const {
    i = skip_ws(i);
    if (i < n_ && p_[i] == '}') return i + 1;
    for (;;) {
      if (i == n_) truncated("the top-level object");
      if (p_[i] != '"') malformed(i, "expected a key string in the top-level object");
      const size_t kend = string_end(i);
      if (kend == npos) truncated("a key of the top-level object");
      const std::string_view key(p_ + i + 1, kend - i - 2);
      i = skip_ws(kend);
      if (i == n_) truncated("the top-level object");
      if (p_[i] != ':') malformed(i, "expected ':' after a key");
      i = skip_ws(fn(key, skip_ws(i + 1)));
      if (i == n_) truncated("the top-level object");
      if (p_[i] == '}') return i + 1;
      if (p_[i] != ',') malformed(i, "expected ',' or '}' in the top-level object");
      i = skip_ws(i + 1);
    }
  }

  // The element spans of the array starting at `i`, named `name` in messages; `end` receives
  // the position after its closing ']'.
  std::vector<Span> array_elements(size_t i, std::string_view name, size_t& end) const {
    std::vector<Span> out;
    if (i >= n_) truncated(str_cat("the value of \"", name, "\""));
    if (p_[i] != '[') src_.fail(str_cat("\"", name, "\" is not an array"));
    i = skip_ws(i + 1);
    if (i < n_ && p_[i] == ']') {
      end = i + 1;
      return out;
    }
    for (;;) {
      const size_t e = value_end(i, Name{name, out.size()});
      out.push_back({i, e});
      i = skip_ws(e);
      if (i == n_) truncated(str_cat("the \"", name, "\" array"));
      if (p_[i] == ']') {
        end = i + 1;
        return out;
      }
      if (p_[i] != ',')
        malformed(i, str_cat("expected ',' or ']' after ", name, "[", out.size() - 1, "]"));
      i = skip_ws(i + 1);
    }
  }

  // Top-level array (results and detection files): the element spans; checks the end.
  std::vector<Span> root_array_elements(std::string_view name) const {
    size_t end = 0;
    std::vector<Span> out = array_elements(expect_root('[') - 1, name, end);
    expect_end(end);
    return out;
  }

  // One past the end of the value starting at i; throws naming `what` when the file ends inside
  // it or its brackets do not match.
  size_t value_end(size_t i, const Name& what) const {
    if (i >= n_) truncated(what.str());
    const char c = p_[i];
    if (c == '"') {
      const size_t e = string_end(i);
      if (e == npos) truncated_in(what, i);
      return e;
    }
    if (c == '{' || c == '[') return container_end(i, what);
    size_t j = i;
    while (j < n_ && !is_delim(p_[j])) ++j;
    if (j == i) malformed(i, str_cat("expected a value for ", what.str()));
    return j;
  }

 private:
  static bool is_delim(char c) {
    return c == ',' || c == ']' || c == '}' || c == ' ' || c == '\n' || c == '\r' || c == '\t' ||
           c == ':' || c == '"' || c == '[' || c == '{';
  }

  // i at an opening quote: one past the closing quote, or npos.
  size_t string_end(size_t i) const {
    size_t j = i + 1;
    for (;;) {
      const void* q = std::memchr(p_ + j, '"', n_ - j);
      if (q == nullptr) return npos;
      const size_t k = static_cast<size_t>(static_cast<const char*>(q) - p_);
      size_t bs = 0;  // an odd run of backslashes escapes the quote
      while (k - bs > i + 1 && p_[k - bs - 1] == '\\') ++bs;
      if (bs % 2 == 0) return k + 1;
      j = k + 1;
    }
  }

  // The next '"', '[', ']', '{' or '}' at or after j, or n_. Records are mostly numbers, so this
  // skips 16 bytes at a time.
  size_t next_special(size_t j) const {
#if defined(__SSE2__)
    const __m128i q = _mm_set1_epi8('"'), lb = _mm_set1_epi8('['), rb = _mm_set1_epi8(']'),
                  lc = _mm_set1_epi8('{'), rc = _mm_set1_epi8('}');
    for (; j + 16 <= n_; j += 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p_ + j));
      const __m128i m =
          _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, lb)),
                       _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, rb), _mm_cmpeq_epi8(v, lc)),
                                    _mm_cmpeq_epi8(v, rc)));
      if (const int bits = _mm_movemask_epi8(m))
        return j + static_cast<size_t>(__builtin_ctz(bits));
    }
#endif
    for (; j < n_; ++j) {
      const char c = p_[j];
      if (c == '"' || c == '[' || c == ']' || c == '{' || c == '}') return j;
    }
    return n_;
  }

  size_t container_end(size_t i, const Name& what) const {
    std::string stack(1, p_[i]);  // open brackets; short, so no allocation
    for (size_t j = next_special(i + 1);; j = next_special(j + 1)) {
      if (j >= n_) truncated_in(what, i);
      const char c = p_[j];
      if (c == '"') {
        const size_t e = string_end(j);
        if (e == npos) truncated_in(what, i);
        j = e - 1;
      } else if (c == '[' || c == '{') {
        stack.push_back(c);
      } else {
        if (stack.back() != (c == ']' ? '[' : '{')) {
          const std::string v = simdjson_verdict(src_, i, j + 1);
          src_.fail(str_cat("malformed JSON in ", what.str(), ": unmatched '", c, "' at byte ", j,
                            v.empty() ? "" : " (simdjson: " + v + ")"));
        }
        stack.pop_back();
        if (stack.empty()) return j + 1;
      }
    }
  }

  [[noreturn]] void truncated(const std::string& what) const {
    src_.fail(str_cat("truncated JSON: the file ends inside ", what));
  }
  // Truncated inside a value starting at `begin`: add simdjson's reading of the partial value.
  [[noreturn]] void truncated_in(const Name& what, size_t begin) const {
    const std::string v = simdjson_verdict(src_, begin, n_);
    src_.fail(str_cat("truncated JSON: the file ends inside ", what.str(),
                      v.empty() ? "" : " (simdjson: " + v + ")"));
  }
  [[noreturn]] void malformed(size_t at, const std::string& msg) const {
    src_.fail(str_cat("malformed JSON at byte ", at, ": ", msg));
  }

  const Source& src_;
  const char* p_;
  size_t n_;
};

// Parses one record span with simdjson (full validation); the element stays valid until the next
// call on the same parser.
dom::element parse_record(dom::parser& parser, const Source& src, Span s, const Name& what);

// A record being read, for messages: "annotation 17" once its id is known, else "annotations[4]".
struct Record {
  const Source& src;
  Name name;
  const char* kind = nullptr;  // set with id when the record has a usable id
  int64_t id = 0;
  [[noreturn]] void fail(const std::string& msg) const {
    src.fail(kind ? str_cat(kind, " ", id, ": ", msg) : str_cat(name.str(), ": ", msg));
  }
  [[noreturn]] void missing(std::string_view field) const {
    fail(str_cat("missing required field \"", field, "\""));
  }

  double number(dom::element v, std::string_view field) const {
    double d = 0;
    if (v.get_double().get(d)) fail(str_cat("field \"", field, "\" must be a number"));
    return d;
  }
  // An integer, written as an int or as a float with an integral value (e.g. 640.0).
  int64_t integer(dom::element v, std::string_view field) const {
    int64_t i = 0;
    if (!v.get_int64().get(i)) return i;
    double d = 0;
    if (v.get_double().get(d) || !(std::nearbyint(d) == d) || std::fabs(d) > 9.007199254740992e15)
      fail(str_cat("field \"", field, "\" must be an integer"));
    return static_cast<int64_t>(d);
  }
  int int32(dom::element v, std::string_view field) const {
    const int64_t i = integer(v, field);
    if (i < INT32_MIN || i > INT32_MAX) fail(str_cat("field \"", field, "\" is out of range"));
    return static_cast<int>(i);
  }
  // 0/1 or true/false.
  bool flag(dom::element v, std::string_view field) const {
    bool b = false;
    if (!v.get_bool().get(b)) return b;
    double d = 0;
    if (v.get_double().get(d)) fail(str_cat("field \"", field, "\" must be a boolean or a number"));
    return d != 0;
  }
  std::string string(dom::element v, std::string_view field) const {
    std::string_view s;
    if (v.get_string().get(s)) fail(str_cat("field \"", field, "\" must be a string"));
    return std::string(s);
  }
  // Reads the numbers of the array `v` into out[0..cap); returns how many it holds.
  template <class T>
  size_t numbers(dom::element v, std::string_view field, T* out, size_t cap) const {
    dom::array a;
    if (v.get_array().get(a)) fail(str_cat("field \"", field, "\" must be an array of numbers"));
    size_t n = 0;
    for (dom::element x : a) {
      double d = 0;
      if (x.get_double().get(d)) fail(str_cat("field \"", field, "\" must be an array of numbers"));
      if (n < cap) out[n] = static_cast<T>(d);
      ++n;
    }
    return n;
  }
  template <class T = float>
  std::array<T, 4> bbox(dom::element v) const {
    std::array<T, 4> b{};
    const size_t n = numbers(v, "bbox", b.data(), 4);
    if (n != 4) fail(str_cat("bbox has ", n, " values, expected 4"));
    return b;
  }
  std::array<float, 3 * kNumJoints> keypoints(dom::element v) const {
    std::array<float, 3 * kNumJoints> k{};
    const size_t n = numbers(v, "keypoints", k.data(), k.size());
    if (n != k.size()) fail(str_cat("keypoints has ", n, " values, expected ", k.size()));
    return k;
  }
  dom::object object(dom::element el) const {
    dom::object o;
    if (el.get_object().get(o)) fail("is not a JSON object");
    return o;
  }
  // Names the record by its id when it has a usable one.
  void name_by_id(dom::object o, const char* k) {
    if (!o["id"].get_int64().get(id)) kind = k;
  }
};

// One field of a record of type T: its key, how its value is read into a T, whether it is required.
// field<&T::member>("key") reads by the member's type: int64_t (integer), int (int32), bool (flag),
// float or double (number), std::string, std::array<float or double, 4> (bbox), keypoints.
template <class T>
struct Field {
  std::string_view key;
  void (*read)(const Record& r, dom::element v, std::string_view key, T& out);
  bool required = true;
};

template <class M>
M read_value(const Record& r, dom::element v, std::string_view key) {
  if constexpr (std::is_same_v<M, int64_t>) {
    return r.integer(v, key);
  } else if constexpr (std::is_same_v<M, int>) {
    return r.int32(v, key);
  } else if constexpr (std::is_same_v<M, bool>) {
    return r.flag(v, key);
  } else if constexpr (std::is_floating_point_v<M>) {
    return static_cast<M>(r.number(v, key));
  } else if constexpr (std::is_same_v<M, std::string>) {
    return r.string(v, key);
  } else if constexpr (std::is_same_v<M, std::array<float, 3 * kNumJoints>>) {
    return r.keypoints(v);
  } else {
    static_assert(std::is_same_v<M, std::array<typename M::value_type, 4>>, "no reader for M");
    return r.bbox<typename M::value_type>(v);
  }
}

template <class P>
struct MemberPointer;
template <class C, class M>
struct MemberPointer<M C::*> {
  using Class = C;
  using Type = M;
};

template <auto Member>
constexpr Field<typename MemberPointer<decltype(Member)>::Class> field(std::string_view key,
                                                                       bool required = true) {
  using P = MemberPointer<decltype(Member)>;
  return {key,
          [](const Record& r, dom::element v, std::string_view k, typename P::Class& out) {
            out.*Member = read_value<typename P::Type>(r, v, k);
          },
          required};
}

// Reads the fields of `fields` the record's object has into `out`, in the object's order (a key
// given twice: the last value); other keys are skipped. Returns the mask of those present (bit i:
// fields[i]).
template <class T, size_t N>
unsigned read_fields(const Record& r, dom::object o, const Field<T> (&fields)[N], T& out) {
  static_assert(N <= 32, "read_fields: at most 32 fields");
  unsigned seen = 0;
  for (const dom::key_value_pair kv : o)
    for (size_t f = 0; f < N; ++f)
      if (kv.key == fields[f].key) {
        fields[f].read(r, kv.value, kv.key, out);
        seen |= 1u << f;
        break;
      }
  return seen;
}

// Throws "missing required field" for the first required field, in table order, not in `seen`.
template <class T, size_t N>
void require_fields(const Record& r, const Field<T> (&fields)[N], unsigned seen) {
  for (size_t f = 0; f < N; ++f)
    if (fields[f].required && !(seen & (1u << f))) r.missing(fields[f].key);
}

// read_fields, then require_fields: the usual record.
template <class T, size_t N>
unsigned read_record(const Record& r, dom::object o, const Field<T> (&fields)[N], T& out) {
  const unsigned seen = read_fields(r, o, fields, out);
  require_fields(r, fields, seen);
  return seen;
}

// The bit of `key` in the masks above.
template <class T, size_t N>
constexpr unsigned field_bit(const Field<T> (&fields)[N], std::string_view key) {
  for (size_t f = 0; f < N; ++f)
    if (fields[f].key == key) return 1u << f;
  return 0;
}

// Calls fn(element, record) for each record span, the record named `name`[i] in messages.
template <class F>
void for_each_record(const Source& src, const std::vector<Span>& spans, std::string_view name,
                     dom::parser& parser, F&& fn) {
  for (size_t i = 0; i < spans.size(); ++i) {
    Record r{src, Name{name, i}};
    fn(parse_record(parser, src, spans[i], r.name), r);
  }
}

// The records of a file whose root is an array of objects (results, detections), named `name`[i]
// in messages: read(object, record, value) fills a value-initialised T and says whether to keep it.
template <class T, class F>
std::vector<T> read_root_records(const std::string& path, std::string_view name, F&& read) {
  const Source src = read_source(path);
  const std::vector<Span> spans = Scanner(src).root_array_elements(name);
  std::vector<T> out;
  out.reserve(spans.size());
  dom::parser parser;
  for_each_record(src, spans, name, parser, [&](dom::element el, Record& r) {
    T v{};
    if (read(r.object(el), r, v)) out.push_back(std::move(v));
  });
  return out;
}

// A value that is not kept must still be valid JSON.
void check_json(const Source& src, Span s, std::string_view key);

// The root object of an annotation file: the element spans of "images" (at least one),
// "annotations" and "categories"; every other key's value is validated and skipped.
struct AnnotationSpans {
  std::vector<Span> images, annotations, categories;
};
AnnotationSpans scan_annotation_file(const Source& src);

std::vector<CocoImage> read_images(const Source& src, const std::vector<Span>& spans,
                                   dom::parser& parser);

// image id -> position; annotation positions per image. Throws on a duplicate image id or an
// annotation of an unknown image.
template <class Ann>
void index_images(const std::vector<CocoImage>& images, const std::vector<Ann>& anns,
                  std::unordered_map<int64_t, size_t>& image_pos,
                  std::vector<std::vector<size_t>>& anns_of_image) {
  image_pos.clear();
  image_pos.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i)
    HR_CHECK(image_pos.emplace(images[i].id, i).second, "[coco] duplicate image id ", images[i].id);
  anns_of_image.assign(images.size(), {});
  for (size_t k = 0; k < anns.size(); ++k) {
    const auto it = image_pos.find(anns[k].image_id);
    HR_CHECK(it != image_pos.end(), "[coco] annotation ", anns[k].id, " refers to unknown image ",
             anns[k].image_id);
    anns_of_image[it->second].push_back(k);
  }
}

// Runs index() (or any check throwing "[coco] ..."), naming `path` in its error.
template <class F>
void with_path(const std::string& path, F&& f) {
  try {
    f();
  } catch (const Error& e) {
    std::string_view m = e.what();
    if (m.rfind("[coco] ", 0) == 0) m.remove_prefix(7);
    throw Error(str_cat("[coco] ", path, ": ", m));
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

// Appends JSON text to a buffer that goes to a temp file next to `path` in large writes; commit()
// renames it over `path`. Destroyed without commit (an error), the temp file is removed.
class AtomicJsonWriter {
 public:
  explicit AtomicJsonWriter(const std::string& path) : path_(path) {
    static std::atomic<unsigned> counter{0};
    for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
      tmp_ = str_cat(path, ".tmp.", ::getpid(), ".", counter++);
      fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ < 0 && errno != EEXIST) break;
    }
    if (fd_ < 0) fail(str_cat("cannot create ", tmp_, ": ", std::strerror(errno)));
    buf_.reserve(kFlushAt + 4096);
  }
  ~AtomicJsonWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  AtomicJsonWriter(const AtomicJsonWriter&) = delete;
  AtomicJsonWriter& operator=(const AtomicJsonWriter&) = delete;

  AtomicJsonWriter& raw(std::string_view s) {
    buf_.append(s);
    if (buf_.size() >= kFlushAt) flush();
    return *this;
  }
  AtomicJsonWriter& integer(int64_t v) {
    char b[24];
    const auto r = std::to_chars(b, b + sizeof b, v);
    buf_.append(b, r.ptr);
    return *this;
  }
  // Shortest text that reads back as the same float (double).
  template <class T>
  AtomicJsonWriter& number(T v, const char* what) {
    static_assert(std::is_floating_point_v<T>, "number() writes floats and doubles");
    if (!std::isfinite(v)) fail(str_cat("cannot write the non-finite value ", v, " (", what, ")"));
    char b[32];
    const auto r = std::to_chars(b, b + sizeof b, v);
    buf_.append(b, r.ptr);
    return *this;
  }
  template <class T>
  AtomicJsonWriter& numbers(const T* v, size_t n, const char* what) {
    buf_.push_back('[');
    for (size_t i = 0; i < n; ++i) {
      if (i) buf_.push_back(',');
      number(v[i], what);
    }
    buf_.push_back(']');
    return *this;
  }
  AtomicJsonWriter& string(std::string_view s) {
    buf_.push_back('"');
    for (const char c : s) {
      if (c == '"' || c == '\\') {
        buf_.push_back('\\');
        buf_.push_back(c);
      } else if (static_cast<unsigned char>(c) < 0x20) {
        char b[8];
        std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(c));
        buf_.append(b);
      } else {
        buf_.push_back(c);
      }
    }
    buf_.push_back('"');
    return *this;
  }

  void commit() {
    flush();
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail(str_cat("cannot write ", tmp_, ": ", std::strerror(errno)));
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
      fail(str_cat("cannot rename ", tmp_, " to it: ", std::strerror(errno)));
    committed_ = true;
  }

  [[noreturn]] void fail(const std::string& msg) const {
    throw Error(str_cat("[coco] ", path_, ": ", msg));
  }

 private:
  static constexpr size_t kFlushAt = 1 << 20;
  void flush() {
    size_t done = 0;
    while (done < buf_.size()) {
      const ssize_t w = ::write(fd_, buf_.data() + done, buf_.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail(str_cat("cannot write ", tmp_, ": ", std::strerror(errno)));
      done += static_cast<size_t>(w);
    }
    buf_.clear();
  }

  std::string path_, tmp_;
  std::string buf_;
  int fd_ = -1;
  bool committed_ = false;
};

// An annotation file up to its annotations' records: info (with `description`), an empty licenses
// list, the images (id, file_name, width, height), the opening of "annotations".
void write_annotation_file_head(AtomicJsonWriter& w, std::string_view description,
                                const std::vector<CocoImage>& images);

// The start of annotation record i (no closing brace): id, image_id, category_id, the box's
// polygon as its segmentation, area, bbox, iscrowd.
template <class T>
void write_annotation_start(AtomicJsonWriter& w, size_t i, int64_t id, int64_t image_id,
                            int64_t category_id, const std::array<T, 4>& b, T area, bool iscrowd) {
  const T poly[8] = {b[0], b[1], b[0] + b[2], b[1], b[0] + b[2], b[1] + b[3], b[0], b[1] + b[3]};
  w.raw(i ? ",\n" : "\n").raw("{\"id\":").integer(id).raw(",\"image_id\":").integer(image_id);
  w.raw(",\"category_id\":").integer(category_id).raw(",\"segmentation\":[");
  w.numbers(poly, 8, "bbox").raw("],\"area\":").number(area, "area");
  w.raw(",\"bbox\":").numbers(b.data(), 4, "bbox").raw(",\"iscrowd\":").integer(iscrowd ? 1 : 0);
}

// A results file at `path`: an array of {"image_id", "category_id", key: the numbers of
// result.*values, "score"}, one record a line.
template <class R, class Values>
void save_results(const std::vector<R>& results, const std::string& path, const char* key,
                  Values R::*values) {
  AtomicJsonWriter w(path);
  w.raw("[");
  for (size_t i = 0; i < results.size(); ++i) {
    const R& r = results[i];
    const Values& v = r.*values;
    w.raw(i ? ",\n" : "\n").raw("{\"image_id\":").integer(r.image_id);
    w.raw(",\"category_id\":").integer(r.category_id).raw(",\"").raw(key).raw("\":");
    w.numbers(v.data(), v.size(), key).raw(",\"score\":").number(r.score, "score").raw("}");
  }
  w.raw("\n]\n");
  w.commit();
}

}  // namespace hr::data::coco_io
