// Image I/O and drawing: PNG round trips exactly, JPEG within a PSNR bound; every bad file
// (missing, empty, truncated, corrupt, a directory) gives one line naming it; writes are atomic.
// Drawing: coverage sums equal the analytic areas of circles, ellipses, capsules, tapered
// capsules, polygons (even-odd) and rectangles; alpha blending; clipping at the borders.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "data/draw.h"
#include "data/image.h"
#include "engine/error.h"
#include "test_util.h"

using namespace hr;
using namespace hr::data;
namespace fs = std::filesystem;
using hr::test::slurp;
using hr::test::TempDir;

namespace {

constexpr double kPi = 3.14159265358979323846;

Image random_image(int w, int h, int c, uint32_t seed) {
  Image img(w, h, c);
  std::mt19937 rng(seed);
  for (auto& p : img.pixels) p = uint8_t(rng() & 0xFF);
  return img;
}

// A smooth picture, the kind JPEG is made for.
Image smooth_image(int w, int h) {
  Image img(w, h, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = img.row(y) + 3 * x;
      p[0] = uint8_t(128 + 100 * std::sin(x * 0.05) * std::cos(y * 0.04));
      p[1] = uint8_t(x * 255 / (w - 1));
      p[2] = uint8_t(y * 255 / (h - 1));
    }
  return img;
}

double psnr(const Image& a, const Image& b) {
  REQUIRE(a.pixels.size() == b.pixels.size());
  double se = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    const double d = double(a.pixels[i]) - double(b.pixels[i]);
    se += d * d;
  }
  const double mse = se / double(a.pixels.size());
  return mse == 0 ? 1e9 : 10 * std::log10(255.0 * 255.0 / mse);
}

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void put_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// read_image(path) must throw one line "cannot read image <path>: <reason>".
void require_read_error(const std::string& path, const std::string& reason_part = "") {
  try {
    read_image(path);
    FAIL("read_image accepted " << path);
  } catch (const Error& e) {
    const std::string m = e.what();
    INFO(m);
    CHECK(m.rfind("cannot read image " + path + ": ", 0) == 0);
    CHECK(m.size() > ("cannot read image " + path + ": ").size());
    CHECK(m.find('\n') == std::string::npos);
    if (!reason_part.empty()) CHECK(m.find(reason_part) != std::string::npos);
  }
}

bool no_temp_files(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp") != std::string::npos) return false;
  return true;
}

// Coverage sum of a 1-channel drawing, in pixels.
double covered(const Image& m) {
  double s = 0;
  for (uint8_t p : m.pixels) s += p;
  return s / 255.0;
}

}  // namespace

TEST_CASE("png round trip is exact, grey and rgba decode to rgb", "[image]") {
  TempDir d;
  const Image img = random_image(37, 23, 3, 1);
  write_image(img, d / "a.png");
  const Image back = read_image(d / "a.png");
  CHECK(back.width == 37);
  CHECK(back.height == 23);
  CHECK(back.channels == 3);
  CHECK(back.pixels == img.pixels);

  const Image grey = random_image(5, 4, 1, 2);
  write_image(grey, d / "g.PNG");  // extension case does not matter
  const Image g3 = read_image(d / "g.PNG");
  REQUIRE(g3.pixels.size() == 5 * 4 * 3);
  for (size_t i = 0; i < grey.pixels.size(); ++i)
    for (int k = 0; k < 3; ++k) CHECK(g3.pixels[3 * i + k] == grey.pixels[i]);

  const Image rgba = random_image(6, 3, 4, 3);
  write_image(rgba, d / "c.png");
  const Image c3 = read_image(d / "c.png");
  for (size_t i = 0; i < 18; ++i)
    for (int k = 0; k < 3; ++k) CHECK(c3.pixels[3 * i + k] == rgba.pixels[4 * i + k]);

  // overwriting an existing file works; the directory holds no temp file afterwards
  write_image(grey, d / "a.png");
  CHECK(read_image(d / "a.png").width == 5);
  CHECK(no_temp_files(d.path));
}

TEST_CASE("jpeg round trip is close", "[image]") {
  TempDir d;
  const Image img = smooth_image(96, 64);
  write_image(img, d / "a.jpg", 95);
  const Image hi = read_image(d / "a.jpg");
  REQUIRE(hi.width == 96);
  REQUIRE(hi.height == 64);
  const double p95 = psnr(img, hi);
  INFO("PSNR q95 " << p95);
  CHECK(p95 > 36);
  CHECK(p95 < 1e8);  // lossy: not bit-identical
  write_image(img, d / "b.jpeg", 30);
  const double p30 = psnr(img, read_image(d / "b.jpeg"));
  INFO("PSNR q30 " << p30);
  CHECK(p30 > 26);
  CHECK(p30 < p95);
  // decode_image names what it was given
  const auto bytes = file_bytes(d / "a.jpg");
  CHECK(decode_image(bytes.data(), bytes.size(), "mem").pixels == hi.pixels);
  // trailing zero padding after the end-of-image marker is accepted
  auto padded = bytes;
  padded.insert(padded.end(), 16, 0);
  put_bytes(d / "padded.jpg", padded);
  CHECK(read_image(d / "padded.jpg").pixels == hi.pixels);
}

TEST_CASE("bad image files give one line naming the file", "[image]") {
  TempDir d;
  require_read_error(d / "missing.jpg", "No such file");
  put_bytes(d / "empty.jpg", {});
  require_read_error(d / "empty.jpg", "empty");
  require_read_error(d.path.string(), "directory");

  write_image(smooth_image(64, 48), d / "ok.jpg", 90);
  write_image(random_image(64, 48, 3, 4), d / "ok.png");
  const auto jpg = file_bytes(d / "ok.jpg"), png = file_bytes(d / "ok.png");
  // cut short: stb alone would decode the JPEG with grey fill
  for (double frac : {0.3, 0.9, 0.999}) {
    put_bytes(d / "cut.jpg", {jpg.begin(), jpg.begin() + long(jpg.size() * frac)});
    require_read_error(d / "cut.jpg", "truncated");
    put_bytes(d / "cut.png", {png.begin(), png.begin() + long(png.size() * frac)});
    require_read_error(d / "cut.png", "truncated");
  }
  put_bytes(d / "cut.jpg", {jpg.begin(), jpg.begin() + 2});
  require_read_error(d / "cut.jpg");
  // not an image at all
  std::vector<uint8_t> junk(500);
  std::mt19937 rng(7);
  for (auto& b : junk) b = uint8_t(rng());
  junk[0] = 'x';
  put_bytes(d / "junk.jpg", junk);
  require_read_error(d / "junk.jpg");
  put_bytes(d / "text.png", {'h', 'e', 'l', 'l', 'o', '\n'});
  require_read_error(d / "text.png");
  // a whole PNG container whose image data is garbage
  auto bad = png;
  for (size_t i = 60; i < 200 && i < bad.size(); ++i) bad[i] ^= 0x5A;
  put_bytes(d / "bad.png", bad);
  require_read_error(d / "bad.png");
  // a JPEG whose header is damaged but whose end marker is intact
  auto badj = jpg;
  for (size_t i = 2; i < 40; ++i) badj[i] = 0xFF;
  put_bytes(d / "bad.jpg", badj);
  require_read_error(d / "bad.jpg");
}

TEST_CASE("write_image is atomic and reports failures naming the file", "[image]") {
  TempDir d;
  const Image img = random_image(8, 8, 3, 5);
  auto require_write_error = [&](const std::string& path, const Image& im) {
    try {
      write_image(im, path);
      FAIL("write_image accepted " << path);
    } catch (const Error& e) {
      const std::string m = e.what();
      INFO(m);
      CHECK(m.rfind("cannot write image " + path + ": ", 0) == 0);
      CHECK(m.find('\n') == std::string::npos);
    }
  };
  require_write_error(d / "no_such_dir/a.png", img);
  require_write_error(d / "a.bmp", img);
  require_write_error(d / "a.png", Image());
  Image broken = img;
  broken.pixels.pop_back();
  require_write_error(d / "a.png", broken);
  // the rename fails (the target is a non-empty directory): the temp file must be gone
  fs::create_directories(d.path / "target.png" / "inside");
  require_write_error(d / "target.png", img);
  CHECK(no_temp_files(d.path));
  // an unwritable directory (root ignores permissions, so only checked for other users)
  if (::geteuid() != 0) {
    fs::create_directories(d.path / "ro");
    fs::permissions(d.path / "ro", fs::perms::owner_read | fs::perms::owner_exec);
    require_write_error(d / "ro/a.png", img);
    fs::permissions(d.path / "ro", fs::perms::owner_all);
    CHECK(fs::is_empty(d.path / "ro"));
  }
  CHECK_FALSE(fs::exists(d.path / "a.png"));
}

TEST_CASE("anti-aliased shapes cover their analytic area", "[draw]") {
  auto area = [](auto draw) {
    Image m(200, 160, 1);
    draw(m);
    return covered(m);
  };
  // circles, large and small, off the pixel grid
  for (double r : {3.5, 7.2, 31.0}) {
    const double a = area([&](Image& m) { fill_circle(m, 100.3f, 80.7f, float(r), {255, 0, 0}); });
    INFO("r " << r << " area " << a);
    CHECK(a == Approx(kPi * r * r).epsilon(0.02));
  }
  // a rotated ellipse
  CHECK(area([](Image& m) { fill_ellipse(m, 99.6f, 80.2f, 40, 12, 0.6f, {255, 0, 0}); }) ==
        Approx(kPi * 40 * 12).epsilon(0.02));
  CHECK(area([](Image& m) { fill_ellipse(m, 99.6f, 80.2f, 5, 3, 2.0f, {255, 0, 0}); }) ==
        Approx(kPi * 5 * 3).epsilon(0.04));
  // a capsule: rectangle plus two half discs
  {
    const double w = 6, len = std::hypot(90.0, 50.0);
    CHECK(area([&](Image& m) { draw_line(m, 50.2f, 40.1f, 140.2f, 90.1f, float(w), {255, 0, 0}); }) ==
          Approx(len * w + kPi * w * w / 4).epsilon(0.02));
  }
  // a tapered capsule: the convex hull of two discs, two right trapezoids (parallel sides r0 and
  // r1, height the tangent length d cos a) plus the uncovered sectors, a = asin((r0 - r1) / d)
  {
    const double r0 = 14, r1 = 5, d = 80;
    const double a = std::asin((r0 - r1) / d);
    const double hull =
        (r0 + r1) * d * std::cos(a) + r0 * r0 * (kPi / 2 + a) + r1 * r1 * (kPi / 2 - a);
    const float c = float(std::cos(0.3)), s = float(std::sin(0.3));
    CHECK(area([&](Image& m) {
            draw_tapered(m, 60.5f, 70.2f, float(r0), 60.5f + 80 * c, 70.2f + 80 * s, float(r1),
                         {255, 0, 0});
          }) == Approx(hull).epsilon(0.02));
    // reversed ends give the same area; equal radii give the capsule
    CHECK(area([&](Image& m) {
            draw_tapered(m, 60.5f + 80 * c, 70.2f + 80 * s, float(r1), 60.5f, 70.2f, float(r0),
                         {255, 0, 0});
          }) == Approx(hull).epsilon(0.02));
    CHECK(area([&](Image& m) { draw_tapered(m, 40, 40, 6, 140, 40, 6, {255, 0, 0}); }) ==
          Approx(100 * 12 + kPi * 36).epsilon(0.02));
    // one disc inside the other: the bigger disc
    CHECK(area([&](Image& m) { draw_tapered(m, 100, 80, 20, 105, 80, 3, {255, 0, 0}); }) ==
          Approx(kPi * 400).epsilon(0.02));
  }
  // polygons: a triangle, and a square with a square hole (even-odd) joined by a bridge
  CHECK(area([](Image& m) { fill_polygon(m, {20.3f, 10.1f, 150.7f, 40.2f, 60.1f, 130.5f}, {255, 0, 0}); }) ==
        Approx(0.5 * std::abs((150.7 - 20.3) * (130.5 - 10.1) - (60.1 - 20.3) * (40.2 - 10.1)))
            .epsilon(0.02));
  CHECK(area([](Image& m) {
          fill_polygon(m, {20, 20, 100, 20, 100, 100, 20, 100, 20, 20, 40, 40, 40, 80, 80, 80, 80,
                           40, 40, 40},
                       {255, 0, 0});
        }) == Approx(80 * 80 - 40 * 40).epsilon(0.02));
  // rectangles: exact pixel overlap
  CHECK(area([](Image& m) { fill_rect(m, 10.25f, 5.5f, 30.75f, 20.0f, {255, 0, 0}); }) ==
        Approx(20.5 * 14.5).margin(0.5 * 40 * 20 / 255.0));
}

TEST_CASE("drawing blends, fills every channel and clips at the borders", "[draw]") {
  // pixel centres sit on integer coordinates: a disc centred on the image corner (-0.5, -0.5)
  // lies a quarter inside
  Image q(60, 60, 1);
  fill_circle(q, -0.5f, -0.5f, 40, {255, 0, 0});
  CHECK(covered(q) == Approx(kPi * 1600 / 4).epsilon(0.02));
  // a square covering pixels 2..4 exactly
  Image r(8, 8, 3, 100);
  fill_rect(r, 1.5f, 1.5f, 4.5f, 4.5f, {200, 10, 30}, 0.5f);
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x) {
      const bool in = x >= 2 && x <= 4 && y >= 2 && y <= 4;
      const uint8_t* p = r.row(y) + 3 * x;
      CHECK(int(p[0]) == (in ? 150 : 100));
      CHECK(int(p[1]) == (in ? 55 : 100));
      CHECK(int(p[2]) == (in ? 65 : 100));
    }
  // 4 channels: colour and coverage in alpha
  Image a(10, 10, 4, 0);
  fill_rect(a, -0.5f, -0.5f, 9.5f, 4.5f, {10, 20, 30});
  CHECK(int(a.row(0)[3]) == 255);
  CHECK(int(a.row(0)[0]) == 10);
  CHECK(int(a.row(9)[3]) == 0);
  // shapes far outside, straddling every border, huge or degenerate: nothing breaks
  Image img(31, 17, 3);
  const RGB c{255, 255, 255};
  for (float cx : {-1000.f, -5.f, 0.f, 15.f, 30.f, 35.f, 1e6f})
    for (float cy : {-1000.f, -3.f, 0.f, 8.f, 16.f, 20.f, 1e6f}) {
      fill_circle(img, cx, cy, 6, c);
      fill_ellipse(img, cx, cy, 9, 3, 0.7f, c);
      draw_line(img, cx, cy, cx + 50, cy - 40, 3, c);
      draw_tapered(img, cx, cy, 5, cx - 30, cy + 30, 1, c);
      fill_polygon(img, {cx, cy, cx + 40, cy + 5, cx - 10, cy + 30}, c);
      fill_rect(img, cx - 8, cy - 8, cx + 8, cy + 8, c);
    }
  fill_circle(img, 15, 8, 1e5f, {1, 2, 3});
  CHECK(int(img.row(0)[0]) == 1);
  CHECK(int(img.row(16)[3 * 30 + 2]) == 3);
  fill_circle(img, NAN, 3, 4, c);
  fill_circle(img, 3, 3, 0, c);
  draw_line(img, 1, 1, 1, 1, 0, c);
  fill_polygon(img, {1, 2, 3, 4}, c);
  Image empty;
  fill_circle(empty, 0, 0, 5, c);
  CHECK(int(img.row(0)[0]) == 1);
}

TEST_CASE("draw_skeleton draws the COCO limbs between shown joints only", "[draw]") {
  Image img(100, 100, 3, 0);
  float kp[17 * 3] = {};
  // left shoulder (5) and left elbow (7): a COCO limb; right knee (14) alone, below threshold
  kp[5 * 3 + 0] = 20, kp[5 * 3 + 1] = 20, kp[5 * 3 + 2] = 0.9f;
  kp[7 * 3 + 0] = 80, kp[7 * 3 + 1] = 20, kp[7 * 3 + 2] = 0.8f;
  kp[14 * 3 + 0] = 50, kp[14 * 3 + 1] = 80, kp[14 * 3 + 2] = 0.2f;
  // left hip (11) shown but its limb partners are not
  kp[11 * 3 + 0] = 50, kp[11 * 3 + 1] = 60, kp[11 * 3 + 2] = 0.95f;
  draw_skeleton(img, kp, 17, 0.3f, 3.f);
  auto lit = [&](int x, int y) {
    const uint8_t* p = img.row(y) + 3 * x;
    return p[0] + p[1] + p[2] > 0;
  };
  CHECK(lit(50, 20));   // on the shoulder-elbow limb
  CHECK(lit(20, 20));   // joints
  CHECK(lit(80, 20));
  CHECK(lit(50, 60));   // a shown joint without a shown partner: a dot
  CHECK_FALSE(lit(50, 80));  // below threshold
  CHECK_FALSE(lit(50, 70));  // no limb from the hip to the hidden knee
  CHECK(lit(35, 40));        // left shoulder - left hip, COCO pair (6, 12)
  CHECK_FALSE(lit(50, 30));
}
