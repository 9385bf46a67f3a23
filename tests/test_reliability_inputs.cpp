// Issue 18, library level: what reads user input refuses hostile or careless values with one
// line (hr::Error naming the file or key) instead of crashing, allocating without bound or
// running into undefined behaviour. Each case was reproduced against the code before its fix.
//   - image headers claiming huge sizes (JPEG, PNG; every decoder path), the settable cap;
//   - exceptions thrown in loader worker threads (bad_alloc, hr::Error, a batch too big to
//     allocate) reach the thread calling next();
//   - YAML alias bombs and deep nesting, empty configs, a directory as the config, numbers out
//     of range, named by file and key;
//   - tensor shapes whose element count or byte size overflows int64, .pth strides that would
//     overflow the copy loop, warp_affine with a degenerate map;
//   - drawing at any float coordinate (NaN, inf, 1e30) neither crashes nor hangs.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <random>
#include <tuple>

#include "data/draw.h"
#include "data/image.h"
#include "data/loader.h"
#include "data/pose.h"
#include "engine/checkpoint_io.h"
#include "engine/error.h"
#include "engine/tensor.h"
#include "models/config.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace hr;
using namespace hr::data;

namespace {

// a temp directory for the file's outputs, removed at exit
const fs::path& scratch() {
  static const hr::test::TempDir d;
  return d.path;
}
std::string path_of(const std::string& name) { return (scratch() / name).string(); }

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

// Calls f, which must throw hr::Error with every one of `parts` in a one-line message.
template <class F>
void require_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const Error& e) {
    const std::string m = e.what();
    INFO(m);
    CHECK(m.find('\n') == std::string::npos);
    for (const auto& p : parts) CHECK(m.find(p) != std::string::npos);
    return;
  }
  FAIL("no hr::Error thrown");
}

Image noise(int w, int h, int c = 3, uint64_t seed = 1) {
  Image img(w, h, c);
  std::mt19937_64 rng(seed);
  for (auto& p : img.pixels) p = static_cast<uint8_t>(rng() >> 56);
  return img;
}

uint32_t crc32(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
  }
  return ~c;
}
void put_be(std::string& s, size_t at, uint32_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s[at + i] = char((v >> (8 * (bytes - 1 - i))) & 0xFF);
}

// A real JPEG whose SOF header claims w x h (the scan data stays that of the small image).
std::string huge_jpeg(const std::string& name, int w, int h) {
  const std::string p = path_of(name);
  write_image(noise(96, 96), p, 95);
  std::string b = read_all(p);
  size_t sof = std::string::npos;
  for (size_t i = 2; i + 9 < b.size(); ++i)
    if (uint8_t(b[i]) == 0xFF && (uint8_t(b[i + 1]) == 0xC0 || uint8_t(b[i + 1]) == 0xC2)) {
      sof = i;
      break;
    }
  REQUIRE(sof != std::string::npos);
  put_be(b, sof + 5, uint32_t(h), 2);
  put_be(b, sof + 7, uint32_t(w), 2);
  write_all(p, b);
  return p;
}

// A PNG (grey when channels is 1) whose IHDR claims w x h, CRC fixed up.
std::string huge_png(const std::string& name, uint32_t w, uint32_t h, int channels = 3) {
  const std::string p = path_of(name);
  write_image(noise(32, 32, channels), p);
  std::string b = read_all(p);
  REQUIRE(b.compare(12, 4, "IHDR") == 0);
  put_be(b, 16, w, 4);
  put_be(b, 20, h, 4);
  put_be(b, 29, crc32(b.substr(12, 17)), 4);
  write_all(p, b);
  return p;
}

}  // namespace

// ------------------------------------------------------------------------------------ images

TEST_CASE("images: a header claiming a huge size is refused before any pixel", "[reliability][image]") {
  // an 18 KB-class JPEG claiming 65000x65000: before the fix libjpeg allocated 12.7 GB for it
  const std::string jpg = huge_jpeg("huge.jpg", 65000, 65000);
  CHECK(fs::file_size(jpg) < 40000);
  require_error([&] { read_image(jpg); }, {jpg, "65000x65000"});
  require_error([&] { EncodedImage::read(jpg); }, {jpg, "65000x65000"});
  const std::string bytes = read_all(jpg);
  const auto* d = reinterpret_cast<const uint8_t*>(bytes.data());
  require_error([&] { decode_image(d, bytes.size(), jpg); }, {jpg, "65000x65000"});
  for (int denom : {1, 2, 8})
    require_error([&] { decode_jpeg_libjpeg(d, bytes.size(), jpg, denom); }, {jpg, "65000x65000"});
  // within the per-side cap but over the pixel cap: 30000 x 30000 = 9e8 pixels (2.7 GB as RGB)
  const std::string jpg2 = huge_jpeg("big.jpg", 30000, 30000);
  require_error([&] { read_image(jpg2); }, {jpg2, "30000x30000", "pixels"});
  require_error([&] { EncodedImage::read(jpg2); }, {jpg2, "30000x30000"});

  // PNG through stb, and as a label map
  const std::string png = huge_png("huge.png", 30000, 30000);
  require_error([&] { read_image(png); }, {png, "30000x30000"});
  require_error([&] { EncodedImage::read(png); }, {png, "30000x30000"});
  const std::string grey = huge_png("huge_grey.png", 30000, 30000, 1);
  require_error([&] { read_gray_image(grey); }, {grey, "30000x30000"});
}

TEST_CASE("images: the pixel cap is settable and a capped image is skipped by the loader", "[reliability][image]") {
  const std::string p = path_of("small.png");
  write_image(noise(20, 10), p);
  CHECK(max_image_pixels() == kDefaultMaxImagePixels);
  set_max_image_pixels(199);
  require_error([&] { read_image(p); }, {p, "20x10", "199"});
  require_error([&] { EncodedImage::read(p); }, {p, "20x10"});
  set_max_image_pixels(200);
  CHECK(read_image(p).width == 20);
  set_max_image_pixels(0);  // back to the default
  CHECK(max_image_pixels() == kDefaultMaxImagePixels);
  REQUIRE_THROWS_AS(set_max_image_pixels(-1), Error);

  // a loader over images, one of them claiming a huge size: skipped and counted, the file named
  struct Images : Dataset {
    std::vector<std::string> files;
    size_t size() const override { return files.size(); }
    std::vector<Field> fields() const override { return {{"input", {1}}}; }
    void load(size_t i, uint64_t, const std::vector<void*>& out) const override {
      *static_cast<float*>(out[0]) = float(read_image(files[i]).width);
    }
  } ds;
  ds.files = {p, huge_jpeg("huge_in_set.jpg", 65000, 65000), p, p};
  LoaderOptions o;
  o.batch_size = 4;
  o.workers = 2;
  o.shuffle = false;
  DataLoader loader(ds, o);
  loader.start_epoch(0);
  Batch b;
  REQUIRE(loader.next(b));
  CHECK(b.skipped == 1);
  CHECK(b.size() == 3);
  REQUIRE(b.errors.size() == 1);
  CHECK(b.errors[0].find(ds.files[1]) != std::string::npos);
}

// ------------------------------------------------------------------------------------ loader

namespace {

// A dataset whose sample `bad` throws what `thrower` throws; fields of `shape` floats.
struct Throwing : Dataset {
  size_t n = 8, bad = 5;
  bool skip = false;
  Shape shape = {2};
  std::function<void()> thrower;
  size_t size() const override { return n; }
  std::vector<Field> fields() const override { return {{"input", shape}}; }
  void load(size_t i, uint64_t, const std::vector<void*>& out) const override {
    if (i == bad) thrower();
    std::memset(out[0], 0, sizeof(float) * 2);
  }
  bool skip_corrupt() const override { return skip; }
};

// Runs an epoch to the end, returning the message of what next() threw ("" for nothing).
template <class E>
std::string epoch_error(const Dataset& ds, int workers) {
  LoaderOptions o;
  o.batch_size = 2;
  o.workers = workers;
  o.shuffle = false;
  DataLoader loader(ds, o);
  loader.start_epoch(0);
  Batch b;
  try {
    while (loader.next(b)) {
    }
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("loader: exceptions thrown in worker threads reach next()", "[reliability][loader]") {
  for (int workers : {1, 3}) {
    INFO("workers " << workers);
    Throwing ds;
    ds.thrower = [] { throw std::bad_alloc(); };
    CHECK(epoch_error<std::bad_alloc>(ds, workers) == std::bad_alloc().what());
    ds.skip = true;  // skipping applies to hr::Error only
    CHECK(epoch_error<std::bad_alloc>(ds, workers) == std::bad_alloc().what());

    Throwing bad;
    bad.thrower = [] { throw Error("cannot read image x.jpg: corrupt"); };
    CHECK(epoch_error<Error>(bad, workers) == "cannot read image x.jpg: corrupt");

    Throwing other;
    other.thrower = [] { throw std::runtime_error("something else"); };
    other.skip = true;
    CHECK(epoch_error<std::runtime_error>(other, workers) == "something else");
  }
}

TEST_CASE("loader: a batch too big to allocate is an error in next(), not std::terminate", "[reliability][loader]") {
  // 2^44 floats a sample: the batch tensors cannot be allocated (before the fix the worker
  // thread threw outside its try block and the process died in std::terminate)
  Throwing ds;
  ds.bad = 100;
  ds.shape = {int64_t(1) << 44};
  std::string m;
  {
    LoaderOptions o;
    o.batch_size = 2;
    o.workers = 2;
    DataLoader loader(ds, o);
    loader.start_epoch(0);
    Batch b;
    try {
      loader.next(b);
    } catch (const Error& e) {
      m = e.what();
    }
    // the loader stays usable: a new epoch fails the same way, the destructor returns
    loader.start_epoch(1);
    CHECK_THROWS_AS(loader.next(b), Error);
  }
  INFO(m);
  CHECK(m.find("memory") != std::string::npos);

  // a sample whose byte size overflows is refused when the loader is made
  Throwing huge;
  huge.shape = {int64_t(1) << 40, int64_t(1) << 40};
  LoaderOptions o;
  o.workers = 1;
  CHECK_THROWS_AS(DataLoader(huge, o), Error);
}

// ------------------------------------------------------------------------------------ configs

TEST_CASE("config: a YAML alias bomb is refused with one line", "[reliability][config]") {
  // billion laughs: 9 levels of 9 aliases each, 9^9 (387 million) nodes once expanded
  std::string text = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n";
  const std::string names = "abcdefghi";
  for (size_t k = 1; k < names.size(); ++k) {
    const std::string prev = std::string("*") + names[k - 1];
    text += std::string(1, names[k]) + ": &" + names[k] + " [";
    for (int r = 0; r < 9; ++r) text += (r ? ", " : "") + prev;
    text += "]\n";
  }
  CHECK(text.size() < 1500);
  const std::string p = path_of("bomb.yaml");
  write_all(p, text);
  const auto t0 = std::chrono::steady_clock::now();
  require_error([&] { models::Config::load(p); }, {"[config] ", p, "nodes"});
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
  // as an override file too
  models::Config c = models::Config::pose_defaults();
  require_error([&] { c.merge_yaml(text, "over.yaml"); }, {"[config] over.yaml", "nodes"});

  // nesting deeper than any config: refused, no stack overflow
  const std::string deep = "X: " + std::string(5000, '[') + std::string(5000, ']') + "\n";
  require_error([&] { models::Config::from_yaml(deep, "deep.yaml"); }, {"[config] deep.yaml"});
  // ordinary aliases still work
  const models::Config ok = models::Config::from_yaml(
      "MODEL: {NAME: pose_hrnet, IMAGE_SIZE: &s [64, 96]}\nDATASET: {DATASET: coco}\n", "ok.yaml");
  CHECK(ok.get_int_list("MODEL.IMAGE_SIZE") == std::vector<int64_t>{64, 96});
}

TEST_CASE("config: empty file, directory, numbers out of range are named by file and key", "[reliability][config]") {
  const std::string empty = path_of("empty.yaml");
  write_all(empty, "");
  require_error([&] { models::Config::load(empty); }, {"[config] ", empty, "empty"});
  const std::string comments = path_of("comments.yaml");
  write_all(comments, "# nothing but a comment\n\n");
  require_error([&] { models::Config::load(comments); }, {"[config] ", comments, "empty"});
  const std::string dir = path_of("cfgdir");
  fs::create_directories(dir);
  require_error([&] { models::Config::load(dir); }, {"[config] ", dir, "directory"});
  require_error([&] { models::Config::load(path_of("missing.yaml")); }, {"[config] ", "missing.yaml"});

  // before the fix: std::out_of_range "stod" / "stoll", naming neither key nor file
  const std::string big = path_of("big.yaml");
  write_all(big, "TRAIN:\n  LR: 1e999\n");
  require_error([&] { models::Config::load(big); }, {"[config] ", big, "TRAIN.LR", "1e999"});
  write_all(big, "TRAIN:\n  END_EPOCH: 99999999999999999999\n");
  require_error([&] { models::Config::load(big); }, {"[config] ", big, "TRAIN.END_EPOCH", "99999999999999999999"});
  write_all(big, "TRAIN:\n  LR_STEP: [1, 99999999999999999999]\n");
  require_error([&] { models::Config::load(big); }, {"[config] ", big, "TRAIN.LR_STEP"});
  // a value that is no number where a number is read
  write_all(big, "TRAIN:\n  LR: fast\n");
  require_error([&] { models::Config::load(big); }, {"[config] ", big, "TRAIN.LR"});
  // overrides
  models::Config c = models::Config::pose_defaults();
  require_error([&] { c.set("TRAIN.LR", "1e999"); }, {"[config] ", "TRAIN.LR", "1e999"});
  require_error([&] { c.set("TRAIN.END_EPOCH", "-99999999999999999999"); }, {"TRAIN.END_EPOCH"});
  c.set("TRAIN.LR", "1e-3");
  CHECK(c.get_float("TRAIN.LR") == 1e-3);
}

// ------------------------------------------------------------------------------------ sizes

TEST_CASE("tensors: shapes whose size overflows int64 are errors", "[reliability][tensor]") {
  const int64_t big = int64_t(1) << 40;
  // 2^80 elements: the product wrapped to 0 before the fix, and a tensor with no storage came back
  require_error([&] { Tensor::empty({big, big}); }, {"overflow"});
  require_error([&] { shape_numel({big, big}); }, {"overflow"});
  require_error([&] { make_strides({2, big, big}, MemoryFormat::Contiguous); }, {"overflow"});
  require_error([&] { make_strides({2, big, big, 2}, MemoryFormat::ChannelsLast); }, {"overflow"});
  // the element count fits, the byte size does not
  require_error([&] { Tensor::empty({int64_t(1) << 62}); }, {"overflow"});
  require_error([&] { Tensor::zeros({int64_t(1) << 31, int64_t(1) << 31}); }, {"overflow"});
  // and ordinary or empty shapes are unchanged
  CHECK(shape_numel({0, big, big}) == 0);
  CHECK(Tensor::empty({big, 0}).numel() == 0);
  CHECK(make_strides({2, 3, 4}, MemoryFormat::Contiguous) == Shape{12, 4, 1});
  CHECK(make_strides({2, 3, 4, 5}, MemoryFormat::ChannelsLast) == Shape{60, 1, 15, 3});
}

namespace {
void put_le(std::string& o, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) o += static_cast<char>((v >> (8 * i)) & 0xFF);
}
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, cd;
  for (const auto& [name, data] : entries) {
    const uint64_t off = out.size();
    const uint32_t crc = crc32(data);
    put_le(out, 0x04034b50, 4); put_le(out, 20, 2); put_le(out, 0, 2); put_le(out, 0, 2);
    put_le(out, 0, 4); put_le(out, crc, 4); put_le(out, data.size(), 4); put_le(out, data.size(), 4);
    put_le(out, name.size(), 2); put_le(out, 0, 2);
    out += name + data;
    put_le(cd, 0x02014b50, 4); put_le(cd, 20, 2); put_le(cd, 20, 2); put_le(cd, 0, 2);
    put_le(cd, 0, 2); put_le(cd, 0, 4); put_le(cd, crc, 4); put_le(cd, data.size(), 4);
    put_le(cd, data.size(), 4); put_le(cd, name.size(), 2); put_le(cd, 0, 2); put_le(cd, 0, 2);
    put_le(cd, 0, 2); put_le(cd, 0, 2); put_le(cd, 0, 4); put_le(cd, off, 4);
    cd += name;
  }
  const uint64_t cd_off = out.size();
  out += cd;
  put_le(out, 0x06054b50, 4); put_le(out, 0, 2); put_le(out, 0, 2); put_le(out, entries.size(), 2);
  put_le(out, entries.size(), 2); put_le(out, cd.size(), 4); put_le(out, cd_off, 4); put_le(out, 0, 2);
  return out;
}
std::string p_str(const std::string& s) {
  std::string o = "X";
  put_le(o, s.size(), 4);
  return o + s;
}
std::string p_long(int64_t v) {  // LONG1, 8 bytes
  std::string o = "\x8a\x08";
  put_le(o, static_cast<uint64_t>(v), 8);
  return o;
}
std::string p_global(const std::string& m, const std::string& n) { return "c" + m + "\n" + n + "\n"; }
std::string p_tuple(const std::vector<std::string>& parts) {
  std::string o = "(";
  for (const auto& p : parts) o += p;
  return o + "t";
}
// {'w': _rebuild_tensor_v2(storage(FloatStorage, '0', numel), offset, size, stride, False, {})}
std::string pth_pickle(int64_t numel, int64_t offset, const std::vector<int64_t>& size,
                       const std::vector<int64_t>& stride) {
  std::vector<std::string> sz, st;
  for (int64_t s : size) sz.push_back(p_long(s));
  for (int64_t s : stride) st.push_back(p_long(s));
  const std::string pid = p_tuple({p_str("storage"), p_global("torch", "FloatStorage"), p_str("0"),
                                   p_str("cpu"), p_long(numel)}) + "Q";
  const std::string t = p_global("torch._utils", "_rebuild_tensor_v2") +
                        p_tuple({pid, p_long(offset), p_tuple(sz), p_tuple(st), "\x89",
                                 p_global("collections", "OrderedDict") + ")R"}) + "R";
  return std::string("\x80\x02}") + p_str("w") + t + "s.";
}
std::string floats(int n) {
  std::string o;
  for (int i = 0; i < n; ++i) {
    const float v = float(i);
    o.append(reinterpret_cast<const char*>(&v), 4);
  }
  return o;
}
}  // namespace

TEST_CASE(".pth: strides and sizes at the int64 limits are checked without overflow", "[reliability][pth]") {
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  auto write = [&](const std::string& name, const std::string& pickle, int storage_floats) {
    const std::string p = path_of(name);
    write_all(p, make_zip({{"arc/data.pkl", pickle}, {"arc/data/0", floats(storage_floats)}}));
    return p;
  };
  // a size-1 dimension with stride INT64_MAX in a non-contiguous view: the copy loop stepped its
  // source index by that stride (signed overflow before the fix); the stride of a size-1
  // dimension is never used, so the values are those of the view
  {
    const std::string p = write("s1.pth", pth_pickle(4, 0, {2, 1, 2}, {1, kMax, 2}), 4);
    io::PthReader r(p);
    const io::RawTensor* t = r.find("w");
    REQUIRE(t);
    std::vector<float> v(4);
    std::memcpy(v.data(), t->data, 16);
    CHECK(v == std::vector<float>{0, 2, 1, 3});
  }
  // sizes whose product overflows, strides reaching past int64, huge offsets: refused by name
  const std::vector<std::tuple<std::string, int64_t, std::vector<int64_t>, std::vector<int64_t>>> bad = {
      {"prod.pth", 0, {int64_t(1) << 40, int64_t(1) << 40}, {1, 1}},
      {"bytes.pth", 0, {int64_t(1) << 61, 2}, {2, 1}},
      {"stride.pth", 0, {2, 2}, {kMax, 1}},
      {"offset.pth", kMax, {2}, {1}},
      {"both.pth", kMax - 1, {3, 3}, {kMax / 2, kMax / 2}},
  };
  for (const auto& [name, off, size, stride] : bad) {
    INFO(name);
    const std::string p = write(name, pth_pickle(4, off, size, stride), 4);
    require_error([&] { io::PthReader r(p); }, {p, "'w'"});
  }
}

TEST_CASE("warp_affine: a degenerate map gives a zero crop, no overflow", "[reliability][pose]") {
  const Image src = noise(40, 30);
  std::vector<uint8_t> out(32 * 24 * 3, 7);
  for (double s : {1e-12, 1e12, 1e300, std::numeric_limits<double>::infinity(),
                   std::numeric_limits<double>::quiet_NaN()}) {
    INFO("scale " << s);
    Affine m;
    m.m = {s, 0, 0, 0, s, 0};  // its inverse maps output pixels to source positions far away
    warp_affine(src, m, 32, 24, out.data());
    warp_affine_mirrored(src, m, 32, 24, out.data());
    Affine t;
    t.m = {1, 0, -s, 0, 1, s};  // translated far away
    std::fill(out.begin(), out.end(), 7);
    warp_affine(src, t, 32, 24, out.data());
    if (std::isfinite(s) && s > 1e9) CHECK(std::count(out.begin(), out.end(), 0) == long(out.size()));
  }
}

// ------------------------------------------------------------------------------------ drawing

TEST_CASE("drawing: any float coordinate is clipped, no crash, no hang", "[reliability][draw]") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  Image img(64, 48, 3);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<std::array<float, 4>> segs = {
      {1e30f, 1e30f, 2e30f, 2e30f},   {-1e30f, -1e30f, -2e30f, 5},   {-1e30f, 20, 1e30f, 20},
      {3e9f, 10, 3e9f, 20},           {-inf, 5, inf, 5},             {nan, 5, 10, 5},
      {5, 5, 5, inf},                 {2147483648.f, 0, 2147483648.f, 1},
      {-2147483904.f, 0, -2147483904.f, 1}, {1e30f, -1e30f, -1e30f, 1e30f}};
  for (const auto& s : segs) {
    INFO(s[0] << "," << s[1] << " -> " << s[2] << "," << s[3]);
    draw_line(img, s[0], s[1], s[2], s[3], 2.f, {255, 0, 0});
    draw_line(img, s[0], s[1], s[2], s[3], 1e30f, {255, 0, 0});
    fill_rect(img, s[0], s[1], s[2], s[3], {0, 255, 0});
    fill_circle(img, s[0], s[1], 3.f, {0, 0, 255});
    fill_circle(img, s[0], s[1], 1e30f, {0, 0, 255});
    fill_ellipse(img, s[0], s[1], s[2], 4.f, 0.3f, {0, 0, 255});
    draw_tapered(img, s[0], s[1], 3.f, s[2], s[3], 5.f, {9, 9, 9});
    fill_polygon(img, {s[0], s[1], s[2], s[3], 10, 10}, {1, 2, 3});
  }
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20));
  // a horizontal line across the whole image from far outside still draws inside it
  Image line(64, 48, 3);
  draw_line(line, -1e9f, 20, 1e9f, 20.5f, 2.f, {255, 255, 255});
  CHECK(line.row(20)[3 * 32] == 255);
  CHECK(line.row(5)[3 * 32] == 0);
  // a skeleton with non-finite or huge keypoints
  std::vector<float> kp(17 * 3, 1.f);
  for (int j = 0; j < 17; ++j) {
    kp[3 * j] = j % 3 == 0 ? nan : j % 3 == 1 ? 1e30f : -inf;
    kp[3 * j + 1] = float(j);
  }
  draw_skeleton(img, kp.data(), 17, 0.2f, 2.f);
}
