// Image decoding and encoding behind one wrapper: JPEG decoding with libjpeg-turbo; other formats
// and encoding with stb_image / stb_image_write compiled here,
// static, so no stb symbol leaks out of the engine library. Truncation that stb lets through
// (a JPEG cut short decodes with grey fill) is detected from the container before decoding.
#include "data/image.h"

#include <array>
#include <cctype>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>

#include "engine/error.h"
#include "engine/file_util.h"

// after <cstdio>: jpeglib.h needs FILE and size_t
#include <jpeglib.h>

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#include <stb_image.h>

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

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

}  // namespace

namespace {

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

Image decode_jpeg_libjpeg(const uint8_t* data, size_t size, const std::string& name) {
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
  }
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF &&
      !jpeg_complete(data, size))
    fail_read(name, "truncated JPEG (no end-of-image marker)");
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
    return decode_jpeg_libjpeg(data, size, name);
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

Image read_image(const std::string& path) {
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
  return decode_image(bytes.data(), bytes.size(), path);
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
  const int ok = png ? stbi_write_png_to_func(append_bytes, &bytes, img.width, img.height,
                                              img.channels, img.pixels.data(),
                                              img.width * img.channels)
                     : stbi_write_jpg_to_func(append_bytes, &bytes, img.width, img.height,
                                              img.channels, img.pixels.data(), jpeg_quality);
  HR_CHECK(ok && !bytes.empty(), "cannot write image ", path, ": encoding failed");

  write_file_atomic(path, bytes.data(), bytes.size(), str_cat("cannot write image ", path));
}

}  // namespace hr::data
