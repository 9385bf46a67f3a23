// stb_image_write behind two functions, in its own translation unit (data/stb_write.cpp): the
// sanitizer build exempts stb's JPEG writer from UBSan's shift checks there alone (it shifts
// negative values, as C++20 defines and every compiler does), not our own code.
#pragma once

namespace hr::data::detail {

using StbWriteFn = void (*)(void* context, void* data, int size);
// As stbi_write_png_to_func / stbi_write_jpg_to_func; false when encoding fails.
bool stb_write_png(StbWriteFn f, void* context, int w, int h, int comp, const void* data,
                   int stride_bytes);
bool stb_write_jpg(StbWriteFn f, void* context, int w, int h, int comp, const void* data,
                   int quality);

}  // namespace hr::data::detail
