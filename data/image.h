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
// JPEG decoding with libjpeg(-turbo), what read_image/decode_image use for JPEG files; denom
// 2, 4 or 8 decodes at that fraction of the size (DCT scaling).
Image decode_jpeg_libjpeg(const uint8_t* data, size_t size, const std::string& name,
                          int denom = 1);
// Writes by extension: .png or .jpg/.jpeg (quality 1..100). Temp file + rename.
void write_image(const Image& img, const std::string& path, int jpeg_quality = 90);

// An image file read into memory, its size known from the header before any pixel is decoded,
// so a pipeline can choose what it needs first (a crop box) and decode no more than that: a JPEG
// at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling: ceil(width/denom) x ceil(height/denom)
// pixels, much faster than a full decode followed by a reduction).
class EncodedImage {
 public:
  static EncodedImage read(const std::string& path);
  int width() const { return width_; }
  int height() const { return height_; }
  bool is_jpeg() const { return jpeg_; }
  // denom 1, 2, 4 or 8 for a JPEG; other formats decode at full size whatever denom says.
  Image decode(int denom = 1) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<uint8_t> bytes_;
  int width_ = 0, height_ = 0;
  bool jpeg_ = false;
  Image full_;  // formats without a header reader here: decoded at read()
};

// Pillow's Image.resize(size, Image.BILINEAR) on an RGB image, bit for bit (what torchvision's
// Resize and RandomResizedCrop do to PIL images): a triangle filter widened by the scale when
// reducing (antialiasing), 22-bit fixed-point weights, a horizontal pass into an 8-bit image
// then a vertical pass, each rounding and clipping as Pillow 9 does.
Image resize_bilinear_pil(const Image& src, int out_w, int out_h);
// RGB uint8 interleaved [H,W,3] -> normalised f32 [3,H,W] with the ImageNet mean and std:
// (v/255 - mean)/std per channel, in float32 as torchvision's ToTensor + Normalize compute it.
void normalize_input(const uint8_t* hwc, int h, int w, float* chw);

// The rectangle [x, x+w) x [y, y+h) of src (inside it), as PIL's Image.crop.
Image crop(const Image& src, int x, int y, int w, int h);

}  // namespace hr::data
