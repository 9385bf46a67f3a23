// COCO keypoint annotation, result and detection files. Reading: the file is loaded once (plus
// simdjson's padding); a small scanner finds the root's keys and the spans of the array elements,
// and simdjson's DOM parser parses and validates each record on its own, so its buffers stay the
// size of one record (a whole-file parse would add 4-12 bytes per byte of the 250 MB train file).
// Writing: one record per line, floats in their shortest round-trip form, temp file + rename.
#include "data/coco.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <simdjson.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <string_view>
#include <utility>

#include "engine/error.h"

namespace hr::data {
namespace {

namespace dom = simdjson::dom;
constexpr size_t npos = static_cast<size_t>(-1);

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

Source read_source(const std::string& path) {
  Source s;
  s.path = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) s.fail(str_cat("cannot open: ", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    s.fail("not a regular file");
  }
  const size_t n = static_cast<size_t>(st.st_size);
  if (n == 0) {
    ::close(fd);
    s.fail("empty file");
  }
  s.text = simdjson::padded_string(n);
  if (s.text.data() == nullptr) {
    ::close(fd);
    s.fail(str_cat("cannot allocate ", n, " bytes"));
  }
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, s.text.data() + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int e = errno;
      ::close(fd);
      s.fail(r == 0 ? std::string("file shrank while being read")
                    : str_cat("read error: ", std::strerror(e)));
    }
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  return s;
}

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
std::string simdjson_verdict(const Source& src, size_t begin, size_t end) {
  dom::parser parser;
  dom::element el;
  const auto err = parser.parse(src.data() + begin, end - begin, false).get(el);
  return err ? simdjson::error_message(err) : "";
}

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
dom::element parse_record(dom::parser& parser, const Source& src, Span s, const Name& what) {
  dom::element el;
  const auto err = parser.parse(src.data() + s.begin, s.end - s.begin, false).get(el);
  if (err) src.fail(str_cat("malformed JSON in ", what.str(), ": ", simdjson::error_message(err)));
  return el;
}

// A record being read, for messages: "annotation 17" once its id is known, else "annotations[4]".
struct Record {
  const Source& src;
  Name name;
  const char* kind = nullptr;  // set with id when the record has a usable id
  int64_t id = 0;
  [[noreturn]] void fail(const std::string& msg) const {
    src.fail(kind ? str_cat(kind, " ", id, ": ", msg) : str_cat(name.str(), ": ", msg));
  }
  [[noreturn]] void missing(const char* field) const {
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
  size_t numbers(dom::element v, std::string_view field, float* out, size_t cap) const {
    dom::array a;
    if (v.get_array().get(a)) fail(str_cat("field \"", field, "\" must be an array of numbers"));
    size_t n = 0;
    for (dom::element x : a) {
      double d = 0;
      if (x.get_double().get(d)) fail(str_cat("field \"", field, "\" must be an array of numbers"));
      if (n < cap) out[n] = static_cast<float>(d);
      ++n;
    }
    return n;
  }
  std::array<float, 4> bbox(dom::element v) const {
    std::array<float, 4> b{};
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

CocoImage read_image(dom::element el, Record& r) {
  const dom::object o = r.object(el);
  r.name_by_id(o, "image");
  CocoImage im;
  bool has_id = false, has_name = false, has_w = false, has_h = false;
  for (const dom::key_value_pair kv : o) {
    if (kv.key == "id") {
      im.id = r.integer(kv.value, kv.key), has_id = true;
    } else if (kv.key == "file_name") {
      im.file_name = r.string(kv.value, kv.key), has_name = true;
    } else if (kv.key == "width") {
      im.width = r.int32(kv.value, kv.key), has_w = true;
    } else if (kv.key == "height") {
      im.height = r.int32(kv.value, kv.key), has_h = true;
    }
  }
  if (!has_id) r.missing("id");
  if (!has_name) r.missing("file_name");
  if (!has_w) r.missing("width");
  if (!has_h) r.missing("height");
  return im;
}

// Returns false for an annotation of another category (dropped without further checks).
bool read_annotation(dom::element el, Record& r, CocoPersonAnn& a) {
  const dom::object o = r.object(el);
  r.name_by_id(o, "annotation");
  dom::element cat;
  if (o["category_id"].get(cat)) r.missing("category_id");
  a.category_id = r.int32(cat, "category_id");
  if (a.category_id != 1) return false;
  enum : unsigned { kId = 1, kImage = 2, kBbox = 4, kArea = 8, kCrowd = 16, kKpts = 32, kNum = 64 };
  unsigned seen = 0;
  for (const dom::key_value_pair kv : o) {
    const std::string_view k = kv.key;
    if (k == "id") {
      a.id = r.integer(kv.value, k), seen |= kId;
    } else if (k == "image_id") {
      a.image_id = r.integer(kv.value, k), seen |= kImage;
    } else if (k == "bbox") {
      a.bbox = r.bbox(kv.value), seen |= kBbox;
    } else if (k == "area") {
      a.area = static_cast<float>(r.number(kv.value, k)), seen |= kArea;
    } else if (k == "iscrowd") {
      a.iscrowd = r.flag(kv.value, k), seen |= kCrowd;
    } else if (k == "keypoints") {
      a.keypoints = r.keypoints(kv.value), seen |= kKpts;
    } else if (k == "num_keypoints") {
      a.num_keypoints = r.int32(kv.value, k), seen |= kNum;
    }
  }
  if (!(seen & kId)) r.missing("id");
  if (!(seen & kImage)) r.missing("image_id");
  if (!(seen & kBbox)) r.missing("bbox");
  if (!(seen & kArea)) r.missing("area");
  if (!(seen & kCrowd)) r.missing("iscrowd");
  if (!(seen & kKpts)) r.missing("keypoints");
  if (!(seen & kNum)) {  // as COCO defines it: the labelled joints
    a.num_keypoints = 0;
    for (int j = 0; j < kNumJoints; ++j) a.num_keypoints += a.keypoints[3 * j + 2] > 0;
  }
  return true;
}

// The person category's keypoint names and skeleton (left empty when the file has none).
void read_category(dom::element el, Record& r, CocoKeypoints& coco) {
  const dom::object o = r.object(el);
  dom::element id;
  if (o["id"].get(id)) r.missing("id");
  if (r.integer(id, "id") != 1) return;
  r.kind = "category", r.id = 1;
  dom::element v;
  if (!o["keypoints"].get(v)) {
    dom::array a;
    if (v.get_array().get(a)) r.fail("field \"keypoints\" must be an array of strings");
    coco.keypoint_names.clear();
    for (dom::element x : a) coco.keypoint_names.push_back(r.string(x, "keypoints"));
  }
  if (!o["skeleton"].get(v)) {
    dom::array a;
    if (v.get_array().get(a)) r.fail("field \"skeleton\" must be an array of pairs");
    coco.skeleton.clear();
    for (dom::element x : a) {
      dom::array pair;
      if (x.get_array().get(pair) || pair.size() != 2)
        r.fail("field \"skeleton\" must be an array of pairs");
      coco.skeleton.push_back({r.int32(pair.at(0).value_unsafe(), "skeleton"),
                               r.int32(pair.at(1).value_unsafe(), "skeleton")});
    }
  }
}

void check_json(const Source& src, Span s, std::string_view key) {
  const std::string v = simdjson_verdict(src, s.begin, s.end);
  if (!v.empty()) src.fail(str_cat("malformed JSON in the value of \"", key, "\": ", v));
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
  // Shortest text that reads back as the same float.
  AtomicJsonWriter& number(float v, const char* what) {
    if (!std::isfinite(v)) fail(str_cat("cannot write the non-finite value ", v, " (", what, ")"));
    char b[32];
    const auto r = std::to_chars(b, b + sizeof b, v);
    buf_.append(b, r.ptr);
    return *this;
  }
  AtomicJsonWriter& numbers(const float* v, size_t n, const char* what) {
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

}  // namespace

// ---------------------------------------------------------------------------------------------

void CocoKeypoints::index() {
  image_pos.clear();
  image_pos.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i)
    HR_CHECK(image_pos.emplace(images[i].id, i).second, "[coco] duplicate image id ", images[i].id);
  anns_of_image.assign(images.size(), {});
  for (size_t k = 0; k < annotations.size(); ++k) {
    const auto it = image_pos.find(annotations[k].image_id);
    HR_CHECK(it != image_pos.end(), "[coco] annotation ", annotations[k].id,
             " refers to unknown image ", annotations[k].image_id);
    anns_of_image[it->second].push_back(k);
  }
}

namespace {

// The records of an annotation file, before index().
CocoKeypoints read_annotation_file(const std::string& path) {
  const Source src = read_source(path);
  const Scanner sc(src);
  std::vector<Span> im_spans, ann_spans, cat_spans;
  bool has_images = false, has_anns = false, has_cats = false;
  const size_t end = sc.object_members(sc.expect_root('{'), [&](std::string_view key, size_t v) {
    auto take = [&](std::vector<Span>& spans, bool& has) {
      if (has) src.fail(str_cat("duplicate key \"", key, "\""));
      has = true;
      size_t e = 0;
      spans = sc.array_elements(v, key, e);
      return e;
    };
    if (key == "images") return take(im_spans, has_images);
    if (key == "annotations") return take(ann_spans, has_anns);
    if (key == "categories") return take(cat_spans, has_cats);
    // info, licenses, ...: not kept, but must be valid JSON
    const std::string what = str_cat("the value of \"", key, "\"");
    const size_t e = sc.value_end(v, Name{what});
    check_json(src, Span{v, e}, key);
    return e;
  });
  sc.expect_end(end);

  CocoKeypoints coco;
  dom::parser parser;
  if (!has_images) src.fail("no \"images\" list");
  if (im_spans.empty()) src.fail("no images");
  coco.images.reserve(im_spans.size());
  for (size_t i = 0; i < im_spans.size(); ++i) {
    Record r{src, Name{"images", i}};
    coco.images.push_back(read_image(parse_record(parser, src, im_spans[i], r.name), r));
  }
  coco.annotations.reserve(ann_spans.size());
  CocoPersonAnn a;
  for (size_t i = 0; i < ann_spans.size(); ++i) {
    Record r{src, Name{"annotations", i}};
    a = CocoPersonAnn{};
    if (read_annotation(parse_record(parser, src, ann_spans[i], r.name), r, a))
      coco.annotations.push_back(a);
  }
  for (size_t i = 0; i < cat_spans.size(); ++i) {
    Record r{src, Name{"categories", i}};
    read_category(parse_record(parser, src, cat_spans[i], r.name), r, coco);
  }
  return coco;
}

}  // namespace

CocoKeypoints load_coco_keypoints(const std::string& path) {
  CocoKeypoints coco = read_annotation_file(path);  // the file's bytes are freed here
  try {
    coco.index();
  } catch (const Error& e) {
    std::string_view m = e.what();
    if (m.rfind("[coco] ", 0) == 0) m.remove_prefix(7);
    throw Error(str_cat("[coco] ", path, ": ", m));
  }
  return coco;
}

void save_coco_keypoints(const CocoKeypoints& coco, const std::string& path) {
  AtomicJsonWriter w(path);
  w.raw("{\"info\":{\"description\":\"COCO-format person keypoints\",\"version\":\"1.0\"},\n")
      .raw("\"licenses\":[],\n\"images\":[");
  for (size_t i = 0; i < coco.images.size(); ++i) {
    const CocoImage& im = coco.images[i];
    w.raw(i ? ",\n" : "\n")
        .raw("{\"id\":")
        .integer(im.id)
        .raw(",\"file_name\":")
        .string(im.file_name);
    w.raw(",\"width\":").integer(im.width).raw(",\"height\":").integer(im.height).raw("}");
  }
  w.raw("],\n\"annotations\":[");
  for (size_t i = 0; i < coco.annotations.size(); ++i) {
    const CocoPersonAnn& a = coco.annotations[i];
    const auto& b = a.bbox;
    const float poly[8] = {b[0],        b[1],        b[0] + b[2], b[1],
                           b[0] + b[2], b[1] + b[3], b[0],        b[1] + b[3]};
    w.raw(i ? ",\n" : "\n").raw("{\"id\":").integer(a.id).raw(",\"image_id\":").integer(a.image_id);
    w.raw(",\"category_id\":").integer(a.category_id).raw(",\"segmentation\":[");
    w.numbers(poly, 8, "bbox").raw("],\"area\":").number(a.area, "area");
    w.raw(",\"bbox\":")
        .numbers(b.data(), 4, "bbox")
        .raw(",\"iscrowd\":")
        .integer(a.iscrowd ? 1 : 0);
    w.raw(",\"num_keypoints\":").integer(a.num_keypoints).raw(",\"keypoints\":");
    w.numbers(a.keypoints.data(), a.keypoints.size(), "keypoints").raw("}");
  }
  const auto& names = coco.keypoint_names.empty() ? coco_keypoint_names() : coco.keypoint_names;
  const auto& skel = coco.skeleton.empty() ? coco_skeleton() : coco.skeleton;
  w.raw("],\n\"categories\":[{\"supercategory\":\"person\",\"id\":1,\"name\":\"person\",")
      .raw("\"keypoints\":[");
  for (size_t j = 0; j < names.size(); ++j) w.raw(j ? "," : "").string(names[j]);
  w.raw("],\"skeleton\":[");
  for (size_t j = 0; j < skel.size(); ++j)
    w.raw(j ? ",[" : "[").integer(skel[j][0]).raw(",").integer(skel[j][1]).raw("]");
  w.raw("]}]}\n");
  w.commit();
}

std::vector<KeypointResult> load_keypoint_results(const std::string& path) {
  const Source src = read_source(path);
  const std::vector<Span> spans = Scanner(src).root_array_elements("results");
  std::vector<KeypointResult> out(spans.size());
  dom::parser parser;
  for (size_t i = 0; i < spans.size(); ++i) {
    Record r{src, Name{"results", i}};
    const dom::object o = r.object(parse_record(parser, src, spans[i], r.name));
    KeypointResult& k = out[i];
    unsigned seen = 0;
    for (const dom::key_value_pair kv : o) {
      if (kv.key == "image_id") {
        k.image_id = r.integer(kv.value, kv.key), seen |= 1;
      } else if (kv.key == "category_id") {
        k.category_id = r.int32(kv.value, kv.key), seen |= 2;
      } else if (kv.key == "keypoints") {
        k.keypoints = r.keypoints(kv.value), seen |= 4;
      } else if (kv.key == "score") {
        k.score = static_cast<float>(r.number(kv.value, kv.key)), seen |= 8;
      }
    }
    if (!(seen & 1)) r.missing("image_id");
    if (!(seen & 2)) r.missing("category_id");
    if (!(seen & 4)) r.missing("keypoints");
    if (!(seen & 8)) r.missing("score");
  }
  return out;
}

void save_keypoint_results(const std::vector<KeypointResult>& results, const std::string& path) {
  AtomicJsonWriter w(path);
  w.raw("[");
  for (size_t i = 0; i < results.size(); ++i) {
    const KeypointResult& k = results[i];
    w.raw(i ? ",\n" : "\n").raw("{\"image_id\":").integer(k.image_id);
    w.raw(",\"category_id\":").integer(k.category_id).raw(",\"keypoints\":");
    w.numbers(k.keypoints.data(), k.keypoints.size(), "keypoints");
    w.raw(",\"score\":").number(k.score, "score").raw("}");
  }
  w.raw("\n]\n");
  w.commit();
}

std::vector<DetectionBox> load_detections(const std::string& path) {
  const Source src = read_source(path);
  const std::vector<Span> spans = Scanner(src).root_array_elements("detections");
  std::vector<DetectionBox> out;
  out.reserve(spans.size());
  dom::parser parser;
  for (size_t i = 0; i < spans.size(); ++i) {
    Record r{src, Name{"detections", i}};
    const dom::object o = r.object(parse_record(parser, src, spans[i], r.name));
    DetectionBox d;
    unsigned seen = 0;
    for (const dom::key_value_pair kv : o) {
      if (kv.key == "image_id") {
        d.image_id = r.integer(kv.value, kv.key), seen |= 1;
      } else if (kv.key == "category_id") {
        d.category_id = r.int32(kv.value, kv.key), seen |= 2;
      } else if (kv.key == "bbox") {
        d.bbox = r.bbox(kv.value), seen |= 4;
      } else if (kv.key == "score") {
        d.score = static_cast<float>(r.number(kv.value, kv.key)), seen |= 8;
      }
    }
    if (!(seen & 2)) r.missing("category_id");
    if (d.category_id != 1) continue;
    if (!(seen & 1)) r.missing("image_id");
    if (!(seen & 4)) r.missing("bbox");
    if (!(seen & 8)) r.missing("score");
    out.push_back(d);
  }
  return out;
}

const std::vector<std::string>& coco_keypoint_names() {
  static const std::vector<std::string> names = {
      "nose",           "left_eye",   "right_eye",   "left_ear",   "right_ear",   "left_shoulder",
      "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
      "right_hip",      "left_knee",  "right_knee",  "left_ankle", "right_ankle"};
  return names;
}

const std::vector<std::array<int, 2>>& coco_skeleton() {
  static const std::vector<std::array<int, 2>> s = {
      {16, 14}, {14, 12}, {17, 15}, {15, 13}, {12, 13}, {6, 12}, {7, 13}, {6, 7}, {6, 8}, {7, 9},
      {8, 10},  {9, 11},  {2, 3},   {1, 2},   {1, 3},   {2, 4},  {3, 5},  {4, 6}, {5, 7}};
  return s;
}

const std::vector<std::array<int, 2>>& coco_flip_pairs() {
  static const std::vector<std::array<int, 2>> p = {{1, 2},  {3, 4},   {5, 6},   {7, 8},
                                                    {9, 10}, {11, 12}, {13, 14}, {15, 16}};
  return p;
}

}  // namespace hr::data
