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

// The largest image any reader here decodes, checked against the size in the file's header
// before a pixel is allocated (a small file can claim 65000x65000 pixels): at most
// kDefaultMaxImagePixels (2^28, e.g. 16384x16384: 768 MiB as RGB) width x height, and at most
// kMaxImageSide (32768) on either side. A larger image is refused like a corrupt one ("cannot read
// image F: header claims WxH pixels, more than ..."), so a loader that skips unreadable images
// skips and counts it. set_max_image_pixels() changes the pixel cap for the whole process
// (thread-safe; 0 restores the default); the per-side cap is fixed.
constexpr int64_t kDefaultMaxImagePixels = int64_t(1) << 28;
constexpr int kMaxImageSide = 32768;
void set_max_image_pixels(int64_t max_pixels);
int64_t max_image_pixels();
// Throws the error above when a w x h image is over the caps (or has a non-positive side).
void check_image_size(int64_t w, int64_t h, const std::string& name);

// Decodes to RGB (channels = 3). Throws hr::Error "cannot read image F: reason" for a missing,
// empty, truncated or corrupt file, or one whose header claims more pixels than the cap above.
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
  // An image already decoded (from memory: the Python package's arrays); `name` stands for the
  // path in messages.
  static EncodedImage from_image(Image img, std::string name = "<image>");
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
// cv2.resize(src, (out_w, out_h), interpolation=cv2.INTER_LINEAR) on an 8-bit image of 1 to 4
// channels, bit for bit with OpenCV 4.10 on x86-64 (modules/imgproc/src/resize.cpp): the same
// size is a copy; an exact halving of both sides is INTER_AREA's 2x2 mean ((a+b+c+d+2)>>2);
// otherwise source position (d+0.5)*scale-0.5 in float, 11-bit weights (INTER_RESIZE_COEF_BITS)
// rounded from float, a horizontal pass into int sums S, then the vertical pass as its SIMD code
// computes it for every value: (((S0>>4)*b0 >> 16) + ((S1>>4)*b1 >> 16) + 2) >> 2.
Image resize_linear(const Image& src, int out_w, int out_h);
// cv2.resize(src, (out_w, out_h), interpolation=cv2.INTER_NEAREST): source index
// min(floor(d * (1 / (out/in))), in - 1) in double, any channel count.
Image resize_nearest(const Image& src, int out_w, int out_h);
// cv2.resize(src, None, fx=fx, fy=fy, interpolation=cv2.INTER_NEAREST): the output size is
// round(in * f) (half to even) and the source index min(floor(d / f), in - 1).
Image resize_nearest_scale(const Image& src, double fx, double fy);

// An 8-bit single-channel image such as a label map, as cv2.imread(path, cv2.IMREAD_GRAYSCALE)
// reads an 8-bit grey PNG (channels = 1, values untouched). A file holding anything else (16-bit,
// colour, palette, grey + alpha, fewer than 8 bits) is an error naming the file and what it holds:
// a grey conversion would turn label ids into luminances. Errors as read_image's.
Image read_gray_image(const std::string& path);

// RGB uint8 interleaved [H,W,3] -> normalised f32 [3,H,W] with the ImageNet mean and std:
// (v/255 - mean)/std per channel, in float32 as torchvision's ToTensor + Normalize compute it.
void normalize_input(const uint8_t* hwc, int h, int w, float* chw);
// The table normalize_input reads, [3][256]: channel c's value for byte v (a dataset's input_lut;
// ops::normalize_u8 with it gives normalize_input's values bit for bit).
const float* imagenet_input_lut();

// The rectangle [x, x+w) x [y, y+h) of src (inside it), as PIL's Image.crop.
Image crop(const Image& src, int x, int y, int w, int h);

// Mirrors img left to right in place, any channel count (PIL's FLIP_LEFT_RIGHT, cv2.flip(img, 1)).
void flip_horizontal(Image& img);

}  // namespace hr::data
