// Tests for engine/checkpoint_io.h: the fixtures written by tools/make_checkpoint_fixtures.py
// (torch 1.13 and the official safetensors package) read back value by value, safetensors
// round trips of every dtype, the writer against the official byte layout, corrupted and
// hostile files, and the atomic write under failures.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>

#include "engine/checkpoint.h"
#include "engine/checkpoint_io.h"
#include "engine/error.h"
#include "test_util.h"

namespace fs = std::filesystem;
using hr::DType;
using hr::io::RawTensor;

namespace {

std::string fixture(const std::string& name) { return std::string(HR_TEST_DATA_DIR) + "/" + name; }

// A per-process scratch directory, removed at exit.
struct Scratch {
  fs::path dir;
  Scratch() {
    dir = fs::temp_directory_path() / ("hr_test_checkpoint_io_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};
std::string scratch(const std::string& name) {
  static Scratch s;
  return (s.dir / name).string();
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  return std::string(std::istreambuf_iterator<char>(f), {});
}
// Replaces the file by a new one (truncating in place makes ext4 flush, ~4 ms a file).
void write_bytes(const std::string& path, const std::string& bytes) {
  std::error_code ec;
  fs::remove(path, ec);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

// Files in the scratch directory whose name contains ".tmp.".
int temp_files_left() {
  int n = 0;
  for (const auto& e : fs::recursive_directory_iterator(fs::path(scratch("x")).parent_path()))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) ++n;
  return n;
}

double half_to_double(uint16_t h) {
  int e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? std::ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp(m + 1024, e - 25);
  return (h >> 15) ? -v : v;
}
double bf16_to_double(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

double value_at(const RawTensor& t, int64_t i) {
  const uint8_t* p = t.data + static_cast<size_t>(i) * hr::dtype_size(t.dtype);
  switch (t.dtype) {
    case DType::f32: { float v; std::memcpy(&v, p, 4); return v; }
    case DType::f16: { uint16_t v; std::memcpy(&v, p, 2); return half_to_double(v); }
    case DType::bf16: { uint16_t v; std::memcpy(&v, p, 2); return bf16_to_double(v); }
    case DType::i64: { int64_t v; std::memcpy(&v, p, 8); return static_cast<double>(v); }
    case DType::u8: return *p;
  }
  return NAN;
}

// The tensors of the fixture state dict and their values as functions of the flat index; the
// same formulas are documented in tools/make_checkpoint_fixtures.py. All are exact in their dtype.
struct Expect {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::function<double(int64_t)> value;
};

std::vector<Expect> expected_state() {
  return {
      {"conv1.weight", DType::f32, {4, 3, 3, 3}, [](int64_t i) { return ((7 * i) % 61) * 0.0625 - 2; }},
      {"bn1.weight", DType::f16, {5}, [](int64_t i) { return 0.5 * i - 1; }},
      {"bn1.running_var", DType::f16, {3, 4}, [](int64_t i) { return 0.25 * (3 * (i % 4) + i / 4) + 0.5; }},
      {"bn1.num_batches_tracked", DType::i64, {}, [](int64_t) { return 12345678901.0; }},
      {"head.bias", DType::bf16, {7}, [](int64_t i) { return 0.25 * i - 0.75; }},
      {"head.weight", DType::bf16, {3, 3}, [](int64_t i) { return 0.125 * (6 * (i / 3) + 1 + 2 * (i % 3)) - 1; }},
      {"index.table", DType::i64, {2, 3}, [](int64_t i) { return 1000000007.0 * i - 3; }},
      {"fc.weight", DType::f32, {3, 5}, [](int64_t i) { return 0.5 * i - 3; }},
      {"fc.weight_t", DType::f32, {5, 3}, [](int64_t i) { return 0.5 * (5 * (i % 3) + i / 3) - 3; }},
      {"shared.a", DType::f32, {6}, [](int64_t i) { return 0.25 * i + 1; }},
      {"shared.b", DType::f32, {2, 3}, [](int64_t i) { return 0.25 * (i + 4) + 1; }},
      {"scale", DType::f32, {}, [](int64_t) { return 0.75; }},
      {"empty", DType::f32, {0, 4}, [](int64_t) { return 0.0; }},
      {"mask", DType::u8, {6}, [](int64_t i) { return static_cast<double>((37 * i + 5) % 256); }},
  };
}

void check_tensor(const RawTensor* t, const Expect& e) {
  INFO("tensor " << e.name);
  REQUIRE(t != nullptr);
  CHECK(t->name == e.name);
  REQUIRE(t->dtype == e.dtype);
  REQUIRE(t->shape == e.shape);
  int64_t n = 1;
  for (int64_t d : e.shape) n *= d;
  REQUIRE(t->nbytes == static_cast<size_t>(n) * hr::dtype_size(e.dtype));
  REQUIRE((t->data != nullptr || n == 0));
  int64_t bad = 0;
  std::string first;
  for (int64_t i = 0; i < n; ++i) {
    double got = value_at(*t, i), want = e.value(i);
    if (got != want) {
      if (bad++ == 0) first = hr::str_cat("[", i, "] got ", got, " expected ", want);
    }
  }
  INFO(bad << " of " << n << " values differ, first " << first);
  REQUIRE(bad == 0);
}

template <class Reader>
void check_state(const Reader& r) {
  const auto expect = expected_state();
  REQUIRE(r.tensors().size() == expect.size());
  for (const Expect& e : expect) check_tensor(r.find(e.name), e);
  CHECK(r.find("no.such.tensor") == nullptr);
}

// Runs f, which must throw hr::Error whose one-line message contains every one of `parts`.
template <class F>
void require_error(F&& f, const std::vector<std::string>& parts) {
  std::string msg;
  try {
    f();
  } catch (const hr::Error& e) {
    msg = e.what();
  }
  INFO("message: " << msg);
  REQUIRE(!msg.empty());
  CHECK(msg.find('\n') == std::string::npos);
  for (const std::string& p : parts) {
    INFO("expected to mention: " << p);
    CHECK(msg.find(p) != std::string::npos);
  }
}

// ---- a minimal zip (STORED) and pickle assembler for hostile .pth files
uint32_t crc32_ref(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
  }
  return ~c;
}
void put(std::string& o, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) o += static_cast<char>((v >> (8 * i)) & 0xFF);
}
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries, int method = 0) {
  std::string out, cd;
  for (const auto& [name, data] : entries) {
    uint64_t off = out.size();
    uint32_t crc = crc32_ref(data);
    put(out, 0x04034b50, 4); put(out, 20, 2); put(out, 0, 2); put(out, method, 2); put(out, 0, 4);
    put(out, crc, 4); put(out, data.size(), 4); put(out, data.size(), 4);
    put(out, name.size(), 2); put(out, 0, 2);
    out += name + data;
    put(cd, 0x02014b50, 4); put(cd, 20, 2); put(cd, 20, 2); put(cd, 0, 2); put(cd, method, 2);
    put(cd, 0, 4); put(cd, crc, 4); put(cd, data.size(), 4); put(cd, data.size(), 4);
    put(cd, name.size(), 2); put(cd, 0, 2); put(cd, 0, 2); put(cd, 0, 2); put(cd, 0, 2);
    put(cd, 0, 4); put(cd, off, 4);
    cd += name;
  }
  uint64_t cd_off = out.size();
  out += cd;
  put(out, 0x06054b50, 4); put(out, 0, 2); put(out, 0, 2); put(out, entries.size(), 2);
  put(out, entries.size(), 2); put(out, cd.size(), 4); put(out, cd_off, 4); put(out, 0, 2);
  return out;
}

std::string p_str(const std::string& s) {
  std::string o = "X";
  put(o, s.size(), 4);
  return o + s;
}
std::string p_int(int32_t v) {
  std::string o = "J";
  put(o, static_cast<uint32_t>(v), 4);
  return o;
}
std::string p_global(const std::string& m, const std::string& n) { return "c" + m + "\n" + n + "\n"; }
std::string p_tuple(const std::vector<std::string>& parts) {
  std::string o = "(";
  for (const auto& p : parts) o += p;
  return o + "t";
}
// _rebuild_tensor_v2(storage(type, key, numel), offset, size, stride, False, OrderedDict())
std::string p_tensor(const std::string& storage_type, const std::string& key, int numel, int offset,
                     const std::vector<int>& size, const std::vector<int>& stride) {
  std::vector<std::string> sz, st;
  for (int s : size) sz.push_back(p_int(s));
  for (int s : stride) st.push_back(p_int(s));
  std::string pid = p_tuple({p_str("storage"), p_global("torch", storage_type), p_str(key), p_str("cpu"), p_int(numel)}) + "Q";
  return p_global("torch._utils", "_rebuild_tensor_v2") +
         p_tuple({pid, p_int(offset), p_tuple(sz), p_tuple(st), "\x89",
                  p_global("collections", "OrderedDict") + ")R"}) +
         "R";
}
std::string p_dict1(const std::string& key, const std::string& value) {
  return std::string("\x80\x02}") + p_str(key) + value + "s.";
}
std::string floats(int n) {
  std::string o;
  for (int i = 0; i < n; ++i) {
    float v = 1.5f * static_cast<float>(i) + 0.25f;
    o.append(reinterpret_cast<const char*>(&v), 4);
  }
  return o;
}

// The entries of a (non-ZIP64) zip, by walking its central directory.
std::vector<std::pair<std::string, std::string>> zip_entries(const std::string& z) {
  auto rd = [&](size_t at, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(z.at(at + i));
    return v;
  };
  size_t eocd = z.rfind(std::string("PK\x05\x06", 4));
  REQUIRE(eocd != std::string::npos);
  size_t p = rd(eocd + 16, 4);
  std::vector<std::pair<std::string, std::string>> out;
  for (uint64_t i = 0, n = rd(eocd + 10, 2); i < n; ++i) {
    size_t nlen = rd(p + 28, 2), xlen = rd(p + 30, 2), clen = rd(p + 32, 2);
    size_t size = rd(p + 20, 4), local = rd(p + 42, 4);
    size_t data = local + 30 + rd(local + 26, 2) + rd(local + 28, 2);
    out.push_back({z.substr(p + 46, nlen), z.substr(data, size)});
    p += 46 + nlen + xlen + clen;
  }
  return out;
}

std::string write_pth(const std::string& name, const std::string& pickle,
                      std::vector<std::pair<std::string, std::string>> extra = {}, int method = 0) {
  std::vector<std::pair<std::string, std::string>> e = {{"arc/data.pkl", pickle}};
  for (auto& x : extra) e.push_back({"arc/" + x.first, x.second});
  std::string path = scratch(name);
  write_bytes(path, make_zip(e, method));
  return path;
}

// Random bytes, never all zero.
std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(1 + rng() % 255);
  return v;
}

}  // namespace

// ------------------------------------------------------------------------------- safetensors

TEST_CASE("safetensors: file from the official library reads value by value", "[checkpoint_io]") {
  hr::io::SafetensorsReader r(fixture("ckpt_state.safetensors"));
  check_state(r);
  CHECK(r.path() == fixture("ckpt_state.safetensors"));
  REQUIRE(r.metadata().size() == 2);
  CHECK(r.metadata().at("format") == "pt");
  CHECK(r.metadata().at("origin") == "make_checkpoint_fixtures");
}

TEST_CASE("safetensors: writer reproduces the official library's bytes", "[checkpoint_io]") {
  const std::string ref = fixture("ckpt_nometa.safetensors");
  hr::io::SafetensorsReader r(ref);
  check_state(r);
  CHECK(r.metadata().empty());
  const std::string out = scratch("rewritten.safetensors");
  hr::io::write_safetensors(out, r.tensors());
  CHECK(read_bytes(out) == read_bytes(ref));
}

TEST_CASE("safetensors: round trip of every dtype, 0-d, empty and odd shapes", "[checkpoint_io]") {
  const DType all[] = {DType::f32, DType::f16, DType::bf16, DType::i64, DType::u8};
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {3, 0, 2}, {1}, {3, 5, 7}, {2, 1, 3, 1}, {1031}};
  std::vector<std::vector<uint8_t>> store;
  std::vector<RawTensor> ts;
  uint64_t seed = 11;
  for (DType t : all)
    for (const auto& s : shapes) {
      RawTensor r;
      r.name = hr::str_cat("t.", hr::dtype_name(t), ".", hr::shape_str(s));
      r.dtype = t;
      r.shape = s;
      r.nbytes = static_cast<size_t>(r.numel()) * hr::dtype_size(t);
      store.push_back(random_bytes(r.nbytes, seed++));
      r.data = store.back().data();
      ts.push_back(r);
    }
  // Names and metadata that need JSON escaping or are not ASCII.
  store.push_back(random_bytes(12, 99));
  ts.push_back(RawTensor{"odd \"name\"\\ with\ttab and \xc3\xbc\xe2\x82\xac", DType::f32, {3}, store.back().data(), 12});
  const std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"empty", ""}, {"quote\"back\\slash", "new\nline\x01"}, {"unicode", "\xc2\xb5m \xf0\x9f\x98\x80"}};

  const std::string path = scratch("roundtrip.safetensors");
  hr::io::write_safetensors(path, ts, meta);
  CHECK(temp_files_left() == 0);
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  CHECK(n % 8 == 0);

  hr::io::SafetensorsReader r(path);
  REQUIRE(r.tensors().size() == ts.size());
  CHECK(r.metadata() == meta);
  for (const RawTensor& want : ts) {
    INFO("tensor " << want.name);
    const RawTensor* got = r.find(want.name);
    REQUIRE(got != nullptr);
    CHECK(got->dtype == want.dtype);
    CHECK(got->shape == want.shape);
    REQUIRE(got->nbytes == want.nbytes);
    if (want.nbytes) CHECK(std::memcmp(got->data, want.data, want.nbytes) == 0);
    CHECK(reinterpret_cast<uintptr_t>(got->data) % hr::dtype_size(got->dtype) == 0);
  }

  // Overwriting an existing file, and a file with no tensors at all.
  hr::io::write_safetensors(path, {ts[4]});
  hr::io::SafetensorsReader r1(path);
  REQUIRE(r1.tensors().size() == 1);
  CHECK(std::memcmp(r1.tensors()[0].data, ts[4].data, ts[4].nbytes) == 0);
  hr::io::write_safetensors(path, {});
  CHECK(hr::io::SafetensorsReader(path).tensors().empty());
}

TEST_CASE("safetensors: the reader keeps its mapping alive in copies", "[checkpoint_io]") {
  const std::string path = scratch("copy.safetensors");
  std::vector<uint8_t> d = random_bytes(40, 5);
  hr::io::write_safetensors(path, {RawTensor{"w", DType::f32, {2, 5}, d.data(), 40}});
  std::unique_ptr<hr::io::SafetensorsReader> a(new hr::io::SafetensorsReader(path));
  hr::io::SafetensorsReader b = *a;
  a.reset();
  fs::remove(path);
  REQUIRE(b.find("w") != nullptr);
  CHECK(std::memcmp(b.find("w")->data, d.data(), 40) == 0);
}

TEST_CASE("safetensors: JSON escapes and whitespace in a hand-written header", "[checkpoint_io]") {
  const std::string json =
      "{ \"__metadata__\" : { \"k\\/\\\"\" : \"v\\u00e9\\ud83d\\ude00\" } ,\n"
      "  \"a\\u00e9\\n\" : {\"data_offsets\":[0,4], \"shape\":[4], \"dtype\":\"U8\"},\n"
      "  \"z\" : {\"dtype\":\"I64\",\"shape\":[0,3],\"data_offsets\":[4,4]} }\t\r\n  ";
  std::string f;
  put(f, json.size(), 8);
  f += json + "\x01\x02\x03\x04";
  const std::string path = scratch("escapes.safetensors");
  write_bytes(path, f);
  hr::io::SafetensorsReader r(path);
  REQUIRE(r.tensors().size() == 2);
  CHECK(r.tensors()[0].name == "a\xc3\xa9\n");
  CHECK(r.tensors()[0].data[3] == 4);
  CHECK(r.tensors()[1].nbytes == 0);
  CHECK(r.metadata().at("k/\"") == "v\xc3\xa9\xf0\x9f\x98\x80");
}

TEST_CASE("safetensors: truncated files are refused naming the file", "[checkpoint_io]") {
  const std::string full = read_bytes(fixture("ckpt_state.safetensors"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(full[i]);
  const size_t cuts[] = {0, 4, 7, 8, 8 + n / 2, 8 + n - 1, 8 + n, 8 + n + 100, full.size() - 1};
  for (size_t cut : cuts) {
    INFO("truncated to " << cut << " of " << full.size() << " bytes");
    const std::string path = scratch("truncated.safetensors");
    write_bytes(path, full.substr(0, cut));
    std::vector<std::string> parts = {path};
    if (cut > 8 + n) parts.push_back("tensor '");
    require_error([&] { hr::io::SafetensorsReader r(path); }, parts);
  }
  require_error([&] { hr::io::SafetensorsReader r(scratch("does_not_exist.safetensors")); },
                {"does_not_exist.safetensors", "cannot open"});
}

TEST_CASE("safetensors: bad header length, JSON and dtype in the official file", "[checkpoint_io]") {
  const std::string full = read_bytes(fixture("ckpt_state.safetensors"));
  const std::string path = scratch("corrupt.safetensors");
  auto with_length = [&](uint64_t len) {
    std::string f = full;
    for (int i = 0; i < 8; ++i) f[i] = static_cast<char>((len >> (8 * i)) & 0xFF);
    return f;
  };
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {with_length(full.size()), {"header length"}},
      {with_length(uint64_t(1) << 63), {"header length"}},
      {with_length(0), {"header length 0"}},
      {with_length(1), {"header length 1"}},
      {with_length(40), {"invalid JSON"}},
  };
  for (const auto& c : cases) {
    write_bytes(path, c.first);
    require_error([&] { hr::io::SafetensorsReader r(path); }, {path, c.second[0]});
  }
  // Byte edits at a found position of the header.
  auto edited = [&](const std::string& find, const std::string& repl) {
    std::string f = full;
    size_t at = f.find(find);
    REQUIRE(at != std::string::npos);
    f.replace(at, find.size(), repl);
    return f;
  };
  const std::vector<std::tuple<std::string, std::string, std::vector<std::string>>> edits = {
      {"\"bn1.weight\":{\"dtype\":\"F16\"", "\"bn1.weight\":{\"dtype\":\"F64\"", {"'bn1.weight'", "F64", "not supported"}},
      {"\"mask\":{\"dtype\":\"U8\"", "\"mask\":{\"dtype\":\"I8\"", {"'mask'", "I8"}},
      {"\"shape\":[5]", "\"shape\":[6]", {"'bn1.weight'", "needs 12 bytes"}},
      {"\"data_offsets\":[716,726]", "\"data_offsets\":[716,999]", {"'bn1.weight'"}},
      {"\"data_offsets\":[0,8]", "\"data_offsets\":[8,0]", {"'bn1.num_batches_tracked'"}},
      {"\"format\":\"pt\"", "\"format\";\"pt\"", {"invalid JSON", "'format'"}},
      {"{\"__metadata__\"", "[\"__metadata__\"", {"invalid JSON"}},
      {"\"format\":\"pt\"", "\"format\":\"p\x01\"", {"invalid JSON", "control character"}},
      {"\"format\":\"pt\"", "\"format\":\"pt\",}", {"invalid JSON"}},
      {"\"format\":\"pt\"", "\"format\":12.5", {"'__metadata__'", "'format'"}},
      {"\"shape\":[3,3]", "\"shape\":[3,-3]", {"'head.weight'", "non-negative"}},
  };
  for (const auto& [find, repl, parts] : edits) {
    INFO("edit " << find << " -> " << repl);
    write_bytes(path, edited(find, repl));
    std::vector<std::string> all = parts;
    all.push_back(path);
    require_error([&] { hr::io::SafetensorsReader r(path); }, all);
  }
}

TEST_CASE("safetensors: offsets, coverage and header structure are validated", "[checkpoint_io]") {
  auto make = [](const std::string& json, size_t data_bytes) {
    std::string f;
    put(f, json.size(), 8);
    f += json + std::string(data_bytes, '\x07');
    const std::string path = scratch("handmade.safetensors");
    write_bytes(path, f);
    return path;
  };
  auto T = [](const std::string& name, const std::string& dtype, const std::string& shape, int b, int e) {
    return hr::str_cat("\"", name, "\":{\"dtype\":\"", dtype, "\",\"shape\":", shape,
                       ",\"data_offsets\":[", b, ",", e, "]}");
  };
  struct Case {
    std::string json;
    size_t data;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {"{" + T("a", "F32", "[4]", 0, 16) + "}", 8, {"'a'", "exceed the data buffer of 8"}},
      {"{" + T("a", "F32", "[2]", 0, 8) + "," + T("b", "F32", "[2]", 4, 12) + "}", 12, {"'b'", "overlap", "'a'"}},
      {"{" + T("a", "F32", "[2]", 0, 8) + "," + T("b", "F32", "[2]", 12, 20) + "}", 20, {"'b'", "gap"}},
      {"{" + T("b", "F32", "[2]", 4, 12) + "}", 12, {"'b'", "gap"}},
      {"{" + T("a", "F32", "[2]", 0, 8) + "}", 12, {"trailing"}},
      {"{" + T("a", "F32", "[3]", 0, 8) + "}", 8, {"'a'", "needs 12 bytes"}},
      {"{" + T("a", "F64", "[1]", 0, 8) + "}", 8, {"'a'", "F64"}},
      {"{" + T("a", "F32", "[2.0]", 0, 8) + "}", 8, {"'a'", "shape"}},
      {"{" + T("a", "F32", "[4294967296,4294967296,4294967296]", 0, 8) + "}", 8, {"'a'", "overflows"}},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.5]}}", 8, {"'a'", "data_offsets"}},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8, {"'a'", "data_offsets"}},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, {"'a'", "data_offsets"}},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8, {"'a'", "unknown field 'x'"}},
      {"{\"a\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, {"'a'", "dtype"}},
      {"{\"a\":[1]}", 0, {"'a'", "expected an object"}},
      {"{" + T("a", "F32", "[2]", 0, 8) + "," + T("a", "F32", "[2]", 0, 8) + "}", 8, {"duplicate key 'a'"}},
      {"{\"__metadata__\":{\"k\":1}}", 0, {"'__metadata__'", "'k'"}},
      {"{\"__metadata__\":[]}", 0, {"'__metadata__'"}},
      {"[]", 0, {"expected an object"}},
      {"{} x", 0, {"invalid JSON", "after the top-level value"}},
      {"{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}", 0, {"invalid JSON", "nesting"}},
      {"{\"a\\u12\":1}", 0, {"invalid JSON", "hex"}},
      {"{\"a\\ud800\":1}", 0, {"invalid JSON", "surrogate"}},
      {"{\"a\":tru}", 0, {"invalid JSON", "'a'"}},
      {"{\"a\":01}", 0, {"invalid JSON"}},
      {"{\"a", 0, {"invalid JSON", "unterminated"}},
  };
  for (const Case& c : cases) {
    INFO("header " << c.json);
    const std::string path = make(c.json, c.data);
    std::vector<std::string> all = c.parts;
    all.push_back(path);
    require_error([&] { hr::io::SafetensorsReader r(path); }, all);
  }
}

TEST_CASE("safetensors: write is atomic and leaves no temp file on failure", "[checkpoint_io]") {
  std::vector<uint8_t> d = random_bytes(65536, 3);
  const std::vector<RawTensor> ts = {RawTensor{"big", DType::u8, {65536}, d.data(), d.size()}};

  // Directory that does not exist: the temp file cannot even be created.
  const std::string missing = scratch("no_such_dir/out.safetensors");
  require_error([&] { hr::io::write_safetensors(missing, ts); }, {missing, "cannot create"});
  CHECK(!fs::exists(missing));

  // The target is a non-empty directory: the temp file is written, the rename fails.
  const std::string dir = scratch("is_a_dir.safetensors");
  fs::create_directories(dir);
  write_bytes(dir + "/keep", "x");
  require_error([&] { hr::io::write_safetensors(dir, ts); }, {dir, "rename"});
  CHECK(fs::is_directory(dir));
  CHECK(temp_files_left() == 0);

  // The disk "fills up" mid-write (file size limit): the old file stays whole, no temp remains.
  const std::string path = scratch("atomic.safetensors");
  std::vector<uint8_t> old = random_bytes(16, 4);
  hr::io::write_safetensors(path, {RawTensor{"old", DType::f32, {4}, old.data(), 16}});
  struct rlimit saved {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
  auto prev = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = saved;
  small.rlim_cur = 4096;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string msg;
  try {
    hr::io::write_safetensors(path, ts);
  } catch (const hr::Error& e) {
    msg = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, prev);
  INFO("message: " << msg);
  CHECK(msg.find(path) != std::string::npos);
  CHECK(temp_files_left() == 0);
  hr::io::SafetensorsReader r(path);
  REQUIRE(r.tensors().size() == 1);
  CHECK(std::memcmp(r.find("old")->data, old.data(), 16) == 0);

  // Invalid input is refused before anything is created.
  const std::string p2 = scratch("invalid.safetensors");
  std::vector<uint8_t> b8 = random_bytes(8, 6);
  require_error([&] { hr::io::write_safetensors(p2, {RawTensor{"x", DType::f32, {3}, b8.data(), 8}}); }, {p2, "'x'", "needs 12 bytes"});
  require_error([&] { hr::io::write_safetensors(p2, {RawTensor{"x", DType::u8, {8}, b8.data(), 8}, RawTensor{"x", DType::u8, {8}, b8.data(), 8}}); }, {"duplicate", "'x'"});
  require_error([&] { hr::io::write_safetensors(p2, {RawTensor{"__metadata__", DType::u8, {8}, b8.data(), 8}}); }, {"reserved"});
  CHECK(!fs::exists(p2));
  CHECK(temp_files_left() == 0);
}

// ------------------------------------------------------------------------------------- .pth

TEST_CASE("pth: torch 1.13 state dict with views, shared storage, 0-d and empty tensors", "[checkpoint_io]") {
  hr::io::PthReader r(fixture("ckpt_state.pth"));
  check_state(r);
  CHECK(r.state_dict_key().empty());
  const auto expect = expected_state();
  for (size_t i = 0; i < expect.size(); ++i) CHECK(r.tensors()[i].name == expect[i].name);  // pickle order
}

TEST_CASE("pth: nested training checkpoint (protocol 4) picks 'state_dict'", "[checkpoint_io]") {
  hr::io::PthReader r(fixture("ckpt_nested.pth"));
  CHECK(r.state_dict_key() == "state_dict");
  check_state(r);  // 'note' (a string) is ignored; the 'model' decoy and the float64 optimizer buffer too
  CHECK(r.find("decoy") == nullptr);
  CHECK(r.find("note") == nullptr);
}

TEST_CASE("pth: ZIP64 archive with another prefix directory", "[checkpoint_io]") {
  hr::io::PthReader r(fixture("ckpt_zip64.pth"));
  check_state(r);
}

TEST_CASE("pth: torch 2.x forms (v3 on an untyped storage, dtype as storage type)", "[checkpoint_io]") {
  hr::io::PthReader r(fixture("ckpt_torch2.pth"));
  CHECK(r.state_dict_key() == "state_dict_ema");
  REQUIRE(r.tensors().size() == 2);
  check_tensor(r.find("v3.bf16"), {"v3.bf16", DType::bf16, {2, 3}, [](int64_t i) { return 0.5 * (i / 3 + 2 * (i % 3)) - 1; }});
  check_tensor(r.find("tag.f16"), {"tag.f16", DType::f16, {4}, [](int64_t i) { return 0.25 * i + 2; }});
}

TEST_CASE("pth: a forbidden global is refused by name, the legacy format clearly", "[checkpoint_io]") {
  const std::string bad = fixture("ckpt_forbidden.pth");
  require_error([&] { hr::io::PthReader r(bad); }, {bad, "refusing global 'posix.system'"});
  const std::string legacy = fixture("ckpt_legacy.pth");
  require_error([&] { hr::io::PthReader r(legacy); }, {legacy, "legacy"});
  const std::string st = fixture("ckpt_state.safetensors");
  require_error([&] { hr::io::PthReader r(st); }, {st, "not a zip archive"});
}

TEST_CASE("pth: truncated and corrupted archives are refused naming the file", "[checkpoint_io]") {
  const std::string full = read_bytes(fixture("ckpt_state.pth"));
  const std::string path = scratch("truncated.pth");
  for (size_t cut : {size_t(0), size_t(3), size_t(100), full.size() / 2, full.size() - 30, full.size() - 1}) {
    INFO("truncated to " << cut << " of " << full.size() << " bytes");
    write_bytes(path, full.substr(0, cut));
    require_error([&] { hr::io::PthReader r(path); }, {path});
  }
  // One flipped bit inside conv1.weight's storage (starts with the floats -2.0, -1.5625).
  const float head[2] = {-2.0f, -1.5625f};
  size_t at = full.find(std::string(reinterpret_cast<const char*>(head), 8));
  REQUIRE(at != std::string::npos);
  std::string flipped = full;
  flipped[at + 5] ^= 0x10;
  write_bytes(path, flipped);
  require_error([&] { hr::io::PthReader r(path); }, {path, "CRC", "data/0"});
}

TEST_CASE("pth: hostile or malformed pickles and archives", "[checkpoint_io]") {
  const std::string s8 = floats(8);
  struct Case {
    std::string name, pickle;
    std::vector<std::pair<std::string, std::string>> extra;
    std::vector<std::string> parts;
    int method = 0;
  };
  const std::string ok = p_dict1("w", p_tensor("FloatStorage", "0", 8, 0, {2, 4}, {4, 1}));
  const std::vector<Case> cases = {
      {"builtins.pth", p_dict1("w", p_global("builtins", "eval") + p_tuple({p_str("1+1")}) + "R"), {}, {"refusing global 'builtins.eval'"}},
      {"stack_global.pth", std::string("\x80\x04}") + p_str("w") + p_str("os") + p_str("system") + "\x93" + "s.", {}, {"refusing global 'os.system'"}},
      {"torch_load.pth", p_dict1("w", p_global("torch", "load")), {}, {"refusing global 'torch.load'"}},
      {"call_storage.pth", p_dict1("w", p_global("torch", "FloatStorage") + ")R"), {}, {"calling 'torch.FloatStorage'"}},
      {"inst.pth", std::string("\x80\x02}(") + "ios\nsystem\n" + p_str("ls") + "s.", {}, {"opcode", "not allowed"}},
      {"no_stop.pth", ok.substr(0, ok.size() - 1), {{"data/0", s8}}, {"truncated"}},
      {"underflow.pth", "\x80\x02s.", {}, {"underflow"}},
      {"memo.pth", "\x80\x02h\x05.", {}, {"memo"}},
      {"list.pth", "\x80\x02]." , {}, {"expected a dict"}},
      {"no_tensors.pth", p_dict1("w", p_int(3)), {}, {"no tensors"}},
      {"missing_storage.pth", ok, {}, {"'w'", "missing"}},
      {"small_storage.pth", ok, {{"data/0", floats(7)}}, {"'w'", "has 28 bytes, expected 32"}},
      {"past_storage.pth", p_dict1("w", p_tensor("FloatStorage", "0", 8, 1, {2, 4}, {4, 1})), {{"data/0", s8}}, {"'w'", "reach past"}},
      {"bad_stride.pth", p_dict1("w", p_tensor("FloatStorage", "0", 8, 0, {2, 4}, {4, 2})), {{"data/0", s8}}, {"'w'", "reach past"}},
      {"double.pth", p_dict1("w", p_tensor("DoubleStorage", "0", 4, 0, {4}, {1})), {{"data/0", s8}}, {"'w'", "torch.DoubleStorage", "not supported"}},
      {"compressed.pth", ok, {{"data/0", s8}}, {"compressed"}, 8},
  };
  for (const Case& c : cases) {
    INFO("case " << c.name);
    const std::string path = write_pth(c.name, c.pickle, c.extra, c.method);
    std::vector<std::string> all = c.parts;
    all.push_back(path);
    require_error([&] { hr::io::PthReader r(path); }, all);
  }
  // The well-formed one reads, with its values.
  hr::io::PthReader r(write_pth("ok.pth", ok, {{"data/0", s8}}));
  check_tensor(r.find("w"), {"w", DType::f32, {2, 4}, [](int64_t i) { return 1.5 * i + 0.25; }});
}

TEST_CASE("pth: 4-D permuted view with offset is materialised contiguous", "[checkpoint_io]") {
  // base[k] = 1.5*k + 0.25 over 200 floats; view of size [2,3,4,5] with strides of a permuted
  // [5,4,3,2] tensor (strides 24, 6, 2, 1, then permute(3,2,1,0)) at storage offset 7.
  const std::vector<int> size = {2, 3, 4, 5}, stride = {1, 2, 6, 24};
  const std::string pickle = p_dict1("v", p_tensor("FloatStorage", "s", 200, 7, size, stride));
  hr::io::PthReader r(write_pth("perm.pth", pickle, {{"data/s", floats(200)}}));
  check_tensor(r.find("v"), {"v", DType::f32, {2, 3, 4, 5}, [&](int64_t i) {
                               int64_t d3 = i % 5, d2 = (i / 5) % 4, d1 = (i / 20) % 3, d0 = i / 60;
                               return 1.5 * (7 + d0 * 1 + d1 * 2 + d2 * 6 + d3 * 24) + 0.25;
                             }});
}

TEST_CASE("pth: deeply nested pickle values outside the state dict", "[checkpoint_io]") {
  // {'w': tensor, 'deep': ((((...),),),)} nested 200000 levels (one TUPLE1 opcode each): the
  // unpickler must neither recurse over it nor tear it down recursively (that overflows an 8 MB
  // stack at this depth).
  const std::string pk = std::string("\x80\x02}") + p_str("w") + p_tensor("FloatStorage", "0", 8, 0, {8}, {1}) +
                         "s" + p_str("deep") + ")" + std::string(200000, '\x85') + "s.";
  hr::io::PthReader r(write_pth("deep.pth", pk, {{"data/0", floats(8)}}));
  REQUIRE(r.tensors().size() == 1);
  check_tensor(r.find("w"), {"w", DType::f32, {8}, [](int64_t i) { return 1.5 * i + 0.25; }});
}

TEST_CASE("pth: expanded views (more elements than the storage) are refused", "[checkpoint_io]") {
  const std::string pk = p_dict1("e", p_tensor("FloatStorage", "0", 4, 0, {1000000, 4}, {0, 1}));
  const std::string path = write_pth("expanded.pth", pk, {{"data/0", floats(4)}});
  require_error([&] { hr::io::PthReader r(path); }, {path, "'e'", "expanded or overlapping"});
}

TEST_CASE("fuzz: mutated checkpoints either read or throw hr::Error", "[checkpoint_io]") {
  std::mt19937_64 rng(2024);
  auto attempt = [](auto make_reader) {
    try {
      auto r = make_reader();
      size_t sum = 0;
      for (const RawTensor& t : r.tensors())
        for (size_t b = 0; b < t.nbytes; ++b) sum += t.data[b];
      return sum != 1 ? 1 : 0;  // touch every byte
    } catch (const hr::Error&) {
      return 2;
    }
  };
  auto mutate = [&](std::string s, size_t region) {
    if (rng() % 8 == 0) return s.substr(0, rng() % s.size());
    for (int k = 1 + static_cast<int>(rng() % 4); k > 0; --k)
      s[rng() % std::min(region, s.size())] = static_cast<char>(rng() % 8 == 0 ? "{}[]\",:0"[rng() % 8] : rng());
    return s;
  };
  int read = 0, refused = 0;

  const std::string st = read_bytes(fixture("ckpt_state.safetensors"));
  const std::string st_path = scratch("fuzz.safetensors");
  for (int i = 0; i < 400; ++i) {
    write_bytes(st_path, mutate(st, 8 + 1016));
    int r = attempt([&] { return hr::io::SafetensorsReader(st_path); });
    (r == 2 ? refused : read)++;
  }

  const auto entries = zip_entries(read_bytes(fixture("ckpt_nested.pth")));
  REQUIRE(entries[0].first == "ckpt_nested/data.pkl");
  const std::string pth_path = scratch("fuzz.pth");
  for (int i = 0; i < 400; ++i) {
    auto e = entries;
    e[0].second = mutate(e[0].second, e[0].second.size());
    write_bytes(pth_path, make_zip(e));
    int r = attempt([&] { return hr::io::PthReader(pth_path); });
    (r == 2 ? refused : read)++;
  }
  const std::string whole = read_bytes(fixture("ckpt_state.pth"));
  for (int i = 0; i < 100; ++i) {
    write_bytes(pth_path, mutate(whole, whole.size()));
    int r = attempt([&] { return hr::io::PthReader(pth_path); });
    (r == 2 ? refused : read)++;
  }
  INFO(read << " mutated files read, " << refused << " refused");
  CHECK(read + refused == 900);
  CHECK(refused > 450);
}

TEST_CASE("load_checkpoint: a safetensors header length whose first byte is 0x80", "[checkpoint_io]") {
  // the first byte of a safetensors file is its header length's low byte; 0x80 is also the
  // pickle PROTO opcode that starts a legacy torch.save stream
  hr::test::TempDir dir;
  const hr::Tensor t = hr::Tensor::from_vector({1.5f, -2.f, 3.25f}, {3});
  bool found = false;
  for (int pad = 0; pad < 300 && !found; ++pad) {
    const std::string path = (dir.path / "m.safetensors").string();
    hr::save_safetensors(path, {{"w", t}}, {{"note", std::string(static_cast<size_t>(pad), 'x')}});
    std::ifstream f(path, std::ios::binary);
    const int first = f.get();
    if (first != 0x80) continue;
    found = true;
    std::map<std::string, std::string> meta;
    const hr::NamedTensors back = hr::load_checkpoint(path, &meta);
    REQUIRE(back.size() == 1);
    REQUIRE(back[0].first == "w");
    REQUIRE(back[0].second.to_vector() == t.to_vector());
    REQUIRE(meta.at("note").size() == static_cast<size_t>(pad));
  }
  REQUIRE(found);
}
