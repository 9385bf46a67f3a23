// stb_image_write's implementation (data/stb_write.h), private to this file.
#include "data/stb_write.h"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

namespace hr::data::detail {

bool stb_write_png(StbWriteFn f, void* context, int w, int h, int comp, const void* data,
                   int stride_bytes) {
  return stbi_write_png_to_func(f, context, w, h, comp, data, stride_bytes) != 0;
}

bool stb_write_jpg(StbWriteFn f, void* context, int w, int h, int comp, const void* data,
                   int quality) {
  return stbi_write_jpg_to_func(f, context, w, h, comp, data, quality) != 0;
}

}  // namespace hr::data::detail
