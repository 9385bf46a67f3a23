// Image headers and decoders (data/image.cpp): decode_image from memory (stb_image for PNG, BMP,
// GIF, ..., libjpeg-turbo for JPEG), EncodedImage::read (header-only size read, the JPEG
// completeness check) and its scaled decodes, read_gray_image (PNG IHDR checks). The pixel cap is
// lowered to 2^20 pixels so a header claiming a huge image is refused before any allocation
// (run with -rss_limit_mb=2048).
#include "data/image.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool capped = (hr::data::set_max_image_pixels(int64_t(1) << 20), true);
  (void)capped;
  HR_FUZZ_EXPECT_ERRORS({
    const hr::data::Image im = hr::data::decode_image(data, size, "fuzz-mem");
    if (im.pixels.size() != size_t(im.width) * im.height * im.channels) __builtin_trap();
  })
  const std::string path = hr_fuzz::write_input(data, size, "in.img");
  HR_FUZZ_EXPECT_ERRORS({
    const hr::data::EncodedImage e = hr::data::EncodedImage::read(path);
    // the scaled decodes only for JPEG (other formats were decoded in full at read())
    for (int denom : {1, 2, 4, 8}) {
      HR_FUZZ_EXPECT_ERRORS({
        const hr::data::Image im = e.decode(denom);
        if (im.pixels.size() != size_t(im.width) * im.height * im.channels) __builtin_trap();
      })
      if (!e.is_jpeg()) break;
    }
  })
  HR_FUZZ_EXPECT_ERRORS({
    const hr::data::Image g = hr::data::read_gray_image(path);
    if (g.pixels.size() != size_t(g.width) * g.height * g.channels) __builtin_trap();
  })
  return 0;
}
