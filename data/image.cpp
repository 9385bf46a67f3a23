// Image decoding and encoding behind one wrapper: JPEG decoding with libjpeg-turbo; other formats
// and encoding with stb_image / stb_image_write compiled here,
// static, so no stb symbol leaks out of the engine library. Truncation that stb lets through
// (a JPEG cut short decodes with grey fill) is detected from the container before decoding.
#include "data/image.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>

#include "engine/error.h"
#include "engine/file_util.h"
#include "kernels/cpu/cpu_kernels.h"

// after <cstdio>: jpeglib.h needs FILE and size_t
#include <jpeglib.h>

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
// stb decodes PNG, BMP and 8-bit PNM only (JPEG is libjpeg's): the formats a dataset or a user
// image comes in, and the least of stb 2.27's decoders for hostile files to reach (the fuzzers
// found overflows in its JPEG and PNM readers: tests/data/fuzz_regressions/image/)
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_PNM
#include <stb_image.h>

#include "data/stb_write.h"

namespace hr::data {

namespace {

[[noreturn]] void fail_read(const std::string& name, const std::string& reason) {
  throw Error(str_cat("cannot read image ", name, ": ", reason));
}

uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

uint32_t crc32(const uint8_t* p, size_t n) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// Walks the PNG chunk chain: "" if it reaches IEND with every CRC right, else why not. stb checks
// no CRC, and damaged compressed data can still inflate to a "valid" picture.
std::string png_problem(const uint8_t* d, size_t n) {
  size_t pos = 8;
  while (pos + 12 <= n) {
    const uint32_t len = be32(d + pos);
    if (len > n - pos - 12) return "truncated PNG (chunk runs past the end of the file)";
    const std::string type(reinterpret_cast<const char*>(d + pos + 4), 4);
    if (crc32(d + pos + 4, size_t(len) + 4) != be32(d + pos + 8 + len))
      return "corrupt PNG (CRC mismatch in chunk " + type + ")";
    if (type == "IEND") return "";
    pos += 12 + size_t(len);
  }
  return "truncated PNG (no IEND chunk)";
}

// What stb_image 2.27 cannot read safely in a binary PGM/PPM (P5/P6) header, "" if nothing
// (tests/data/fuzz_regressions/image/): a number that overflows its int (undefined behaviour),
// and a 16-bit file (maximum value > 255), whose pixels it reads into a buffer sized for 8 bits
// and then converts, past the end. Its scan: width, height and maximum value, each after
// whitespace and '#' comments to the end of the line.
std::string pnm_problem(const uint8_t* d, size_t n) {
  if (n < 2 || d[0] != 'P' || (d[1] != '5' && d[1] != '6')) return "";
  auto space = [](uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
  size_t i = 2;
  for (int field = 0; field < 3; ++field) {
    for (;;) {
      while (i < n && space(d[i])) ++i;
      if (i >= n || d[i] != '#') break;
      while (i < n && d[i] != '\n' && d[i] != '\r') ++i;
    }
    int64_t v = 0;
    for (; i < n && d[i] >= '0' && d[i] <= '9'; ++i)
      if ((v = v * 10 + (d[i] - '0')) > INT32_MAX) return "corrupt PNM header (a number too large)";
    if (field == 2 && v > 255) return str_cat("16-bit PNM (maximum value ", v, "): not supported");
  }
  return "";
}

// Also SOI after FF fill bytes, or not followed by a marker: stb_image takes those for JPEGs,
// and none may reach its JPEG decoder (v2.27 writes past its Huffman size table on a DHT segment
// of more than 256 codes: tests/data/fuzz_regressions/image/); libjpeg refuses them.
bool is_jpeg(const uint8_t* d, size_t n) {
  size_t i = 0;
  while (i < n && d[i] == 0xFF) ++i;
  return i >= 1 && i < n && d[i] == 0xD8;
}

// A JPEG is whole when it ends with the EOI marker (FF D9); some writers pad with zeros after it.
bool jpeg_complete(const uint8_t* d, size_t n) {
  while (n > 2 && d[n - 1] == 0) --n;
  return n >= 4 && d[n - 2] == 0xFF && d[n - 1] == 0xD9;
}

std::string lower_ext(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  std::string e = path.substr(dot);
  for (auto& c : e) c = char(std::tolower(static_cast<unsigned char>(c)));
  return e;
}

void append_bytes(void* ctx, void* data, int size) {
  auto* buf = static_cast<std::vector<uint8_t>*>(ctx);
  const auto* p = static_cast<const uint8_t*>(data);
  buf->insert(buf->end(), p, p + size);
}

std::atomic<int64_t> g_max_pixels{kDefaultMaxImagePixels};

}  // namespace

void set_max_image_pixels(int64_t max_pixels) {
  HR_CHECK(max_pixels >= 0, "set_max_image_pixels: negative cap ", max_pixels);
  g_max_pixels.store(max_pixels == 0 ? kDefaultMaxImagePixels : max_pixels);
}

int64_t max_image_pixels() { return g_max_pixels.load(); }

void check_image_size(int64_t w, int64_t h, const std::string& name) {
  if (w <= 0 || h <= 0) fail_read(name, str_cat("header gives an empty size ", w, "x", h));
  const int64_t cap = max_image_pixels();
  if (w > kMaxImageSide || h > kMaxImageSide)
    fail_read(name, str_cat("header claims ", w, "x", h, " pixels, more than ", kMaxImageSide,
                            " on a side (the limit kMaxImageSide)"));
  if (w * h > cap)  // both <= 2^15: no overflow
    fail_read(name, str_cat("header claims ", w, "x", h, " = ", w * h, " pixels, more than the ",
                            cap, " allowed (set_max_image_pixels)"));
}

namespace {

// The size in the header of an image stb reads, checked against the caps before stb decodes.
void check_stb_header(const uint8_t* d, size_t n, const std::string& name) {
  int w = 0, h = 0, c = 0;
  const std::string why = pnm_problem(d, n);
  if (!why.empty()) fail_read(name, why);
  if (!stbi_info_from_memory(d, int(n), &w, &h, &c)) {
    const char* why = stbi_failure_reason();
    fail_read(name, why ? why : "unknown image format");
  }
  check_image_size(w, h, name);
}

// JPEG through libjpeg-turbo: 2.5x faster than stb_image here, and the decoder (and default
// settings: islow IDCT, fancy upsampling) that cv2.imread uses in the official pipeline, so the
// pixels are the ones the official code trains on. Errors longjmp out with libjpeg's message.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_silent(j_common_ptr, int) {}

}  // namespace

Image decode_jpeg_libjpeg(const uint8_t* data, size_t size, const std::string& name, int denom) {
  HR_CHECK(denom == 1 || denom == 2 || denom == 4 || denom == 8, "cannot read image ", name,
           ": JPEG scale 1/", denom, " (1, 2, 4 or 8)");
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_silent;
  err.message[0] = 0;
  // everything with a destructor exists before setjmp: longjmp skips no destructor
  Image img;
  std::vector<uint8_t> cmyk;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    fail_read(name, err.message[0] ? err.message : "corrupt JPEG");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  if (int64_t(cinfo.image_width) > kMaxImageSide || int64_t(cinfo.image_height) > kMaxImageSide ||
      int64_t(cinfo.image_width) * cinfo.image_height > max_image_pixels() ||
      cinfo.image_width == 0 || cinfo.image_height == 0) {
    const int64_t w = cinfo.image_width, h = cinfo.image_height;
    jpeg_destroy_decompress(&cinfo);
    check_image_size(w, h, name);  // throws (no longjmp from here on: the struct is gone)
  }
  cinfo.scale_num = 1;
  cinfo.scale_denom = static_cast<unsigned>(denom);
  cinfo.out_color_space = JCS_RGB;  // grey and CMYK/YCCK are converted by libjpeg
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK)
    cinfo.out_color_space = JCS_CMYK;
  jpeg_start_decompress(&cinfo);
  img.width = static_cast<int>(cinfo.output_width);
  img.height = static_cast<int>(cinfo.output_height);
  img.channels = 3;
  const int comps = cinfo.output_components;
  img.pixels.resize(size_t(img.width) * img.height * 3);
  if (comps == 4) cmyk.resize(size_t(img.width) * 4);
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* dst = img.row(static_cast<int>(cinfo.output_scanline));
    JSAMPROW row = comps == 3 ? dst : cmyk.data();
    jpeg_read_scanlines(&cinfo, &row, 1);
    if (comps == 4)  // Adobe (inverted) CMYK, as libjpeg delivers it
      for (int x = 0; x < img.width; ++x) {
        const uint8_t* q = &cmyk[size_t(x) * 4];
        for (int c = 0; c < 3; ++c) dst[3 * x + c] = uint8_t((q[c] * q[3] + 127) / 255);
      }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return img;
}

Image decode_image(const uint8_t* data, size_t size, const std::string& name) {
  if (size == 0) fail_read(name, "empty file");
  if (size > size_t(INT32_MAX)) fail_read(name, "file larger than 2 GiB");
  if (size >= 8 && std::memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0) {
    const std::string why = png_problem(data, size);
    if (!why.empty()) fail_read(name, why);
    if (size >= 24 && std::memcmp(data + 12, "IHDR", 4) == 0)  // the size, before stb sees it
      check_image_size(be32(data + 16), be32(data + 20), name);
  }
  if (is_jpeg(data, size) && !jpeg_complete(data, size))
    fail_read(name, "truncated JPEG (no end-of-image marker)");
  if (is_jpeg(data, size)) return decode_jpeg_libjpeg(data, size, name);
  check_stb_header(data, size, name);
  int w = 0, h = 0, c = 0;
  uint8_t* px = stbi_load_from_memory(data, int(size), &w, &h, &c, 3);
  if (!px) {
    const char* why = stbi_failure_reason();
    fail_read(name, why ? why : "unknown decoding error");
  }
  Image img;
  img.width = w;
  img.height = h;
  img.channels = 3;
  img.pixels.assign(px, px + size_t(w) * h * 3);
  stbi_image_free(px);
  return img;
}

namespace {

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail_read(path, std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  size_t got = 0;
  while ((got = std::fread(chunk, 1, sizeof chunk, f)) > 0) bytes.insert(bytes.end(), chunk, chunk + got);
  const bool err = std::ferror(f);
  const int e = errno;
  std::fclose(f);
  if (err) fail_read(path, e == EISDIR ? "is a directory" : std::strerror(e));
  return bytes;
}

// A JPEG's size (and number of components) from its header (libjpeg), nothing decoded.
void jpeg_size(const uint8_t* data, size_t size, const std::string& name, int* w, int* h,
               int* components = nullptr) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_silent;
  err.message[0] = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    fail_read(name, err.message[0] ? err.message : "corrupt JPEG");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  const int64_t iw = cinfo.image_width, ih = cinfo.image_height;
  if (components) *components = cinfo.num_components;
  jpeg_destroy_decompress(&cinfo);
  check_image_size(iw, ih, name);
  *w = static_cast<int>(iw);
  *h = static_cast<int>(ih);
}

}  // namespace

Image read_image(const std::string& path) {
  const std::vector<uint8_t> bytes = read_bytes(path);
  return decode_image(bytes.data(), bytes.size(), path);
}

EncodedImage EncodedImage::read(const std::string& path) {
  EncodedImage e;
  e.path_ = path;
  e.bytes_ = read_bytes(path);
  const uint8_t* d = e.bytes_.data();
  const size_t n = e.bytes_.size();
  if (n == 0) fail_read(path, "empty file");
  if (data::is_jpeg(d, n)) {
    if (!jpeg_complete(d, n)) fail_read(path, "truncated JPEG (no end-of-image marker)");
    e.jpeg_ = true;
    jpeg_size(d, n, path, &e.width_, &e.height_);  // checked against the caps
    return e;
  }
  e.full_ = decode_image(d, n, path);
  e.width_ = e.full_.width;
  e.height_ = e.full_.height;
  e.bytes_.clear();
  return e;
}

EncodedImage EncodedImage::from_image(Image img, std::string name) {
  HR_CHECK(img.channels == 3 && !img.empty(), name, ": an image must be RGB with pixels, got ",
           img.width, "x", img.height, "x", img.channels);
  EncodedImage e;
  e.path_ = std::move(name);
  e.width_ = img.width;
  e.height_ = img.height;
  e.full_ = std::move(img);
  return e;
}

Image read_gray_image(const std::string& path) {
  const std::vector<uint8_t> bytes = read_bytes(path);
  const uint8_t* d = bytes.data();
  const size_t n = bytes.size();
  if (n == 0) fail_read(path, "empty file");
  if (n > size_t(INT32_MAX)) fail_read(path, "file larger than 2 GiB");
  if (n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) {
    const std::string why = png_problem(d, n);
    if (!why.empty()) fail_read(path, why);
    // IHDR: length, type, width, height, bit depth, colour type
    if (n < 33 || std::memcmp(d + 12, "IHDR", 4) != 0) fail_read(path, "PNG without an IHDR chunk");
    const int depth = d[24], type = d[25];
    static const char* const kTypes[7] = {"grey", "?", "RGB", "palette", "grey + alpha", "?",
                                          "RGBA"};
    if (type != 0 || depth != 8)
      fail_read(path, str_cat("expected an 8-bit single-channel (grey) PNG of label ids, got ",
                              depth, "-bit ", type <= 6 ? kTypes[type] : "?",
                              " (convert it to 8-bit grey ids)"));
    check_image_size(be32(d + 16), be32(d + 20), path);
  } else if (is_jpeg(d, n)) {
    // libjpeg as in decode_image, never stb_image: stb 2.27 writes past its Huffman size table on
    // a DHT segment of more than 256 codes (tests/data/fuzz_regressions/image/)
    if (!jpeg_complete(d, n)) fail_read(path, "truncated JPEG (no end-of-image marker)");
    int w = 0, h = 0, c = 0;
    jpeg_size(d, n, path, &w, &h, &c);
    if (c != 1)
      fail_read(path, str_cat("expected an 8-bit single-channel image of label ids, got ", c,
                              " channels"));
    const Image rgb = decode_jpeg_libjpeg(d, n, path);  // grey replicated into R, G and B
    Image img(rgb.width, rgb.height, 1);
    for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = rgb.pixels[3 * i];
    return img;
  } else {
    const std::string why = pnm_problem(d, n);
    if (!why.empty()) fail_read(path, why);
    int w = 0, h = 0, c = 0;
    if (!stbi_info_from_memory(d, int(n), &w, &h, &c)) {
      const char* why = stbi_failure_reason();
      fail_read(path, why ? why : "unknown image format");
    }
    if (c != 1 || stbi_is_16_bit_from_memory(d, int(n)))
      fail_read(path, str_cat("expected an 8-bit single-channel image of label ids, got ", c,
                              " channels", stbi_is_16_bit_from_memory(d, int(n)) ? ", 16-bit" : ""));
    check_image_size(w, h, path);
  }
  int w = 0, h = 0, c = 0;
  uint8_t* px = stbi_load_from_memory(d, int(n), &w, &h, &c, 1);
  if (!px) {
    const char* why = stbi_failure_reason();
    fail_read(path, why ? why : "unknown decoding error");
  }
  Image img;
  img.width = w;
  img.height = h;
  img.channels = 1;
  img.pixels.assign(px, px + size_t(w) * h);
  stbi_image_free(px);
  return img;
}

Image EncodedImage::decode(int denom) const {
  if (!jpeg_) return full_;
  return decode_jpeg_libjpeg(bytes_.data(), bytes_.size(), path_, denom);
}

// ---------------------------------------------------------------------------------------------
// Pillow's bilinear resize (src/libImaging/Resample.c, Pillow 9)
// ---------------------------------------------------------------------------------------------
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

// Per output pixel: the first input pixel, the number of taps, and the 22-bit weights.
struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // [out][2]: xmin, count
  std::vector<int32_t> k;   // [out][ksize]
};

Coeffs pil_coeffs(int in_size, int out_size) {
  const double scale = double(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;  // the bilinear (triangle) filter's support
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(size_t(out_size) * 2);
  c.k.assign(size_t(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    double ww = 0;
    for (int x = 0; x < xmax; ++x) {
      double t = (x + xmin - center + 0.5) * ss;
      t = t < 0 ? -t : t;
      w[x] = t < 1 ? 1 - t : 0;
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      c.k[size_t(xx) * c.ksize + x] = static_cast<int32_t>(
          v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    c.bounds[size_t(xx) * 2] = xmin;
    c.bounds[size_t(xx) * 2 + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

}  // namespace

Image resize_bilinear_pil(const Image& src, int out_w, int out_h) {
  HR_CHECK(src.channels == 3 && src.width > 0 && src.height > 0 && out_w > 0 && out_h > 0,
           "resize: bad sizes ", src.width, "x", src.height, "x", src.channels, " -> ", out_w,
           "x", out_h);
  const bool horizontal = out_w != src.width, vertical = out_h != src.height;
  const Coeffs ch = pil_coeffs(src.width, out_w), cv = pil_coeffs(src.height, out_h);
  // the rows the vertical pass reads
  const int ybox_first = cv.bounds[0];
  const int ybox_last = cv.bounds[size_t(out_h - 1) * 2] + cv.bounds[size_t(out_h - 1) * 2 + 1];
  Image tmp;
  const Image* cur = &src;
  int row0 = 0;  // the row of `cur` that source row ybox_first is at
  if (horizontal) {
    tmp = Image(out_w, ybox_last - ybox_first, 3);
    for (int y = 0; y < tmp.height; ++y) {
      const uint8_t* in = src.row(y + ybox_first);
      uint8_t* out = tmp.row(y);
      for (int xx = 0; xx < out_w; ++xx) {
        const int xmin = ch.bounds[size_t(xx) * 2], xmax = ch.bounds[size_t(xx) * 2 + 1];
        const int32_t* k = &ch.k[size_t(xx) * ch.ksize];
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < xmax; ++x) {
          const uint8_t* p = in + size_t(x + xmin) * 3;
          s0 += p[0] * k[x];
          s1 += p[1] * k[x];
          s2 += p[2] * k[x];
        }
        out[3 * xx] = clip8(s0);
        out[3 * xx + 1] = clip8(s1);
        out[3 * xx + 2] = clip8(s2);
      }
    }
    cur = &tmp;
    row0 = -ybox_first;
  }
  if (!vertical) return horizontal ? tmp : src;
  Image out(cur->width, out_h, 3);
  for (int yy = 0; yy < out_h; ++yy) {
    const int ymin = cv.bounds[size_t(yy) * 2] + row0, ymax = cv.bounds[size_t(yy) * 2 + 1];
    const int32_t* k = &cv.k[size_t(yy) * cv.ksize];
    uint8_t* o = out.row(yy);
    for (int xx = 0; xx < cur->width; ++xx) {
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int y = 0; y < ymax; ++y) {
        const uint8_t* p = cur->row(y + ymin) + size_t(xx) * 3;
        s0 += p[0] * k[y];
        s1 += p[1] * k[y];
        s2 += p[2] * k[y];
      }
      o[3 * xx] = clip8(s0);
      o[3 * xx + 1] = clip8(s1);
      o[3 * xx + 2] = clip8(s2);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// OpenCV's resize (modules/imgproc/src/resize.cpp, 4.10, x86-64 with 128-bit universal intrinsics)
// ---------------------------------------------------------------------------------------------
namespace {

constexpr int kCoefBits = 11, kCoefScale = 1 << kCoefBits;  // INTER_RESIZE_COEF_BITS/SCALE

// cvRound / saturate_cast<int>(double|float): to nearest, ties to even (the default rounding mode)
inline int cv_round(double v) { return static_cast<int>(std::lrint(v)); }
inline int cv_floor(double v) { return static_cast<int>(std::floor(v)); }
inline uint8_t sat_u8(int v) { return static_cast<uint8_t>(std::clamp(v, 0, 255)); }
inline int16_t sat_s16(int v) { return static_cast<int16_t>(std::clamp(v, -32768, 32767)); }

void check_resize(const Image& src, int out_w, int out_h, const char* what) {
  HR_CHECK(src.width > 0 && src.height > 0 && src.channels >= 1 && src.channels <= 4 &&
               src.pixels.size() == size_t(src.width) * src.height * src.channels && out_w > 0 &&
               out_h > 0,
           what, ": bad sizes ", src.width, "x", src.height, "x", src.channels, " -> ", out_w, "x",
           out_h);
}

// resizeAreaFast_ for an exact halving: the 2x2 mean. OpenCV rounds (sum + 2) >> 2 for 1, 3 and 4
// channels (ResizeAreaFastVec) and saturate_cast<uchar>(sum * 0.25f) (ties to even) for 2.
Image halve_area(const Image& src, int out_w, int out_h) {
  const int cn = src.channels;
  Image out(out_w, out_h, cn);
  for (int y = 0; y < out_h; ++y) {
    const uint8_t* a = src.row(2 * y);
    const uint8_t* b = src.row(2 * y + 1);
    uint8_t* o = out.row(y);
    for (int x = 0; x < out_w; ++x)
      for (int c = 0; c < cn; ++c) {
        const int i = 2 * x * cn + c;
        const int sum = a[i] + a[i + cn] + b[i] + b[i + cn];
        o[x * cn + c] = cn == 2 ? sat_u8(cv_round(float(sum) * 0.25f)) : uint8_t((sum + 2) >> 2);
      }
  }
  return out;
}

}  // namespace

Image resize_linear(const Image& src, int out_w, int out_h) {
  check_resize(src, out_w, out_h, "resize_linear");
  if (out_w == src.width && out_h == src.height) return src;
  const int cn = src.channels, sw = src.width, sh = src.height;
  const double inv_x = double(out_w) / sw, inv_y = double(out_h) / sh;
  const double scale_x = 1. / inv_x, scale_y = 1. / inv_y;
  const int iscale_x = cv_round(scale_x), iscale_y = cv_round(scale_y);
  const bool area_fast = std::abs(scale_x - iscale_x) < DBL_EPSILON &&
                         std::abs(scale_y - iscale_y) < DBL_EPSILON;
  if (area_fast && iscale_x == 2 && iscale_y == 2) return halve_area(src, out_w, out_h);

  // horizontal coefficients (per output column): first source column and the two weights
  std::vector<int> xofs(out_w);
  std::vector<int16_t> alpha(size_t(out_w) * 2);
  int xmax = out_w;
  for (int dx = 0; dx < out_w; ++dx) {
    float fx = float((dx + 0.5) * scale_x - 0.5);
    int sx = cv_floor(fx);
    fx -= float(sx);
    if (sx < 0) fx = 0, sx = 0;
    if (sx + 1 >= sw) {
      xmax = std::min(xmax, dx);
      if (sx >= sw - 1) fx = 0, sx = sw - 1;
    }
    xofs[dx] = sx;
    alpha[2 * dx] = sat_s16(cv_round((1.f - fx) * kCoefScale));
    alpha[2 * dx + 1] = sat_s16(cv_round(fx * kCoefScale));
  }
  // the horizontal pass of one source row: int sums (weights times pixels)
  const int wc = out_w * cn;
  auto hrow = [&](int sy, std::vector<int>& d) {
    const uint8_t* s = src.row(sy);
    for (int dx = 0; dx < out_w; ++dx) {
      const uint8_t* p = s + size_t(xofs[dx]) * cn;
      for (int c = 0; c < cn; ++c)
        d[size_t(dx) * cn + c] = dx < xmax ? p[c] * alpha[2 * dx] + p[c + cn] * alpha[2 * dx + 1]
                                           : p[c] * kCoefScale;
    }
  };
  Image out(out_w, out_h, cn);
  std::vector<int> r0(wc), r1(wc);
  int have0 = -1, have1 = -1;  // the source rows r0 and r1 hold
  for (int dy = 0; dy < out_h; ++dy) {
    float fy = float((dy + 0.5) * scale_y - 0.5);
    const int sy = cv_floor(fy);
    fy -= float(sy);
    const int b0 = sat_s16(cv_round((1.f - fy) * kCoefScale));
    const int b1 = sat_s16(cv_round(fy * kCoefScale));
    const int y0 = std::clamp(sy, 0, sh - 1), y1 = std::clamp(sy + 1, 0, sh - 1);
    if (have0 != y0) {
      if (have1 == y0) {
        std::swap(r0, r1);
        std::swap(have0, have1);
      } else {
        hrow(y0, r0);
        have0 = y0;
      }
    }
    if (have1 != y1) {
      if (y1 == have0) {
        r1 = r0;
      } else {
        hrow(y1, r1);
      }
      have1 = y1;
    }
    uint8_t* o = out.row(dy);
    // VResizeLinearVec_32s8u's arithmetic, which the 4.10 build applies to every value of the
    // row (checked against cv2 for widths 1..49, 1 and 3 channels): 16-bit products' high halves
    for (int x = 0; x < wc; ++x) {
      const int a = (sat_s16(r0[x] >> 4) * b0) >> 16, b = (sat_s16(r1[x] >> 4) * b1) >> 16;
      o[x] = sat_u8((sat_s16(a + b) + 2) >> 2);
    }
  }
  return out;
}

namespace {

// resizeNN: source index min(floor(d * inverse), size - 1) in double
Image nearest(const Image& src, int out_w, int out_h, double ifx, double ify) {
  const int cn = src.channels;
  std::vector<int> xofs(out_w);
  for (int x = 0; x < out_w; ++x) xofs[x] = std::min(cv_floor(x * ifx), src.width - 1) * cn;
  Image out(out_w, out_h, cn);
  for (int y = 0; y < out_h; ++y) {
    const uint8_t* s = src.row(std::min(cv_floor(y * ify), src.height - 1));
    uint8_t* o = out.row(y);
    for (int x = 0; x < out_w; ++x)
      for (int c = 0; c < cn; ++c) o[x * cn + c] = s[xofs[x] + c];
  }
  return out;
}

}  // namespace

Image resize_nearest(const Image& src, int out_w, int out_h) {
  check_resize(src, out_w, out_h, "resize_nearest");
  if (out_w == src.width && out_h == src.height) return src;
  return nearest(src, out_w, out_h, 1. / (double(out_w) / src.width),
                 1. / (double(out_h) / src.height));
}

Image resize_nearest_scale(const Image& src, double fx, double fy) {
  HR_CHECK(fx > 0 && fy > 0, "resize_nearest_scale: bad factors ", fx, ", ", fy);
  const int out_w = cv_round(src.width * fx), out_h = cv_round(src.height * fy);
  check_resize(src, out_w, out_h, "resize_nearest_scale");
  if (out_w == src.width && out_h == src.height) return src;
  return nearest(src, out_w, out_h, 1. / fx, 1. / fy);
}

const float* imagenet_input_lut() {
  // (v / 255 - mean) / std in float32, tabulated once
  struct Lut {
    float v[3][256];
    Lut() {
      const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
      for (int c = 0; c < 3; ++c)
        for (int i = 0; i < 256; ++i) v[c][i] = (static_cast<float>(i) / 255.f - mean[c]) / std[c];
    }
  };
  static const Lut lut;
  return &lut.v[0][0];
}

void normalize_input(const uint8_t* hwc, int h, int w, float* chw) {
  cpu::lut_u8_planar(1, h, w, 3, hwc, imagenet_input_lut(), nullptr, chw);
}

Image crop(const Image& src, int x, int y, int w, int h) {
  HR_CHECK(w > 0 && h > 0 && x >= 0 && y >= 0 && x + w <= src.width && y + h <= src.height,
           "crop: box ", x, ",", y, " ", w, "x", h, " outside the ", src.width, "x", src.height,
           " image");
  Image out(w, h, src.channels);
  const size_t rb = size_t(w) * src.channels;
  for (int r = 0; r < h; ++r)
    std::memcpy(out.row(r), src.row(y + r) + size_t(x) * src.channels, rb);
  return out;
}

void flip_horizontal(Image& img) {
  const int cn = img.channels;
  for (int y = 0; y < img.height; ++y) {
    uint8_t* r = img.row(y);
    for (int a = 0, b = img.width - 1; a < b; ++a, --b)
      for (int c = 0; c < cn; ++c) std::swap(r[cn * a + c], r[cn * b + c]);
  }
}

void write_image(const Image& img, const std::string& path, int jpeg_quality) {
  const std::string ext = lower_ext(path);
  const bool png = ext == ".png", jpg = ext == ".jpg" || ext == ".jpeg";
  HR_CHECK(png || jpg, "cannot write image ", path, ": unknown extension '", ext,
           "' (use .png, .jpg or .jpeg)");
  HR_CHECK(img.width > 0 && img.height > 0, "cannot write image ", path, ": empty image (",
           img.width, "x", img.height, ")");
  HR_CHECK(img.channels == 1 || img.channels == 3 || img.channels == 4, "cannot write image ",
           path, ": ", img.channels, " channels (1, 3 or 4 supported)");
  HR_CHECK(img.pixels.size() == size_t(img.width) * img.height * img.channels,
           "cannot write image ", path, ": ", img.pixels.size(), " bytes for a ", img.width, "x",
           img.height, "x", img.channels, " image");
  HR_CHECK(!jpg || (jpeg_quality >= 1 && jpeg_quality <= 100), "cannot write image ", path,
           ": JPEG quality ", jpeg_quality, " outside 1..100");

  std::vector<uint8_t> bytes;
  const bool ok = png ? detail::stb_write_png(append_bytes, &bytes, img.width, img.height,
                                              img.channels, img.pixels.data(),
                                              img.width * img.channels)
                      : detail::stb_write_jpg(append_bytes, &bytes, img.width, img.height,
                                              img.channels, img.pixels.data(), jpeg_quality);
  HR_CHECK(ok && !bytes.empty(), "cannot write image ", path, ": encoding failed");

  write_file_atomic(path, bytes.data(), bytes.size(), str_cat("cannot write image ", path));
}

}  // namespace hr::data
