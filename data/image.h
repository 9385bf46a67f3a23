// Images as 8-bit interleaved pixels, decoded with stb_image (JPEG, PNG, BMP, ...) and written as
// PNG or JPEG with stb_image_write, atomically. Errors are one line naming the file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace hr::data {

struct Image {
  int width = 0, height = 0, channels = 3;  // interleaved rows, no padding
  std::vector<uint8_t> pixels;               // height * width * channels
  Image() = default;
  Image(int w, int h, int c = 3, uint8_t fill = 0)
      : width(w), height(h), channels(c), pixels(size_t(w) * h * c, fill) {}
  uint8_t* row(int y) { return pixels.data() + size_t(y) * width * channels; }
  const uint8_t* row(int y) const { return pixels.data() + size_t(y) * width * channels; }
  bool empty() const { return pixels.empty(); }
};

// Decodes to RGB (channels = 3). Throws hr::Error "cannot read image F: reason" for a missing,
// empty, truncated or corrupt file.
Image read_image(const std::string& path);
Image decode_image(const uint8_t* data, size_t size, const std::string& name);
// JPEG decoding with libjpeg(-turbo), what read_image/decode_image use for JPEG files.
Image decode_jpeg_libjpeg(const uint8_t* data, size_t size, const std::string& name);
// Writes by extension: .png or .jpg/.jpeg (quality 1..100). Temp file + rename.
void write_image(const Image& img, const std::string& path, int jpeg_quality = 90);

}  // namespace hr::data
