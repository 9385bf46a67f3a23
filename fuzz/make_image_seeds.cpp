// Writes the image seed corpus of fuzz_image (fuzz/seeds/image/, committed; rerun only to
// regenerate): small PNG (RGB, grey, grey+alpha, RGBA), BMP, TGA with stb_image_write, and JPEG
// (baseline 4:2:0 and 4:4:4, greyscale, progressive, restart markers) with libjpeg.
//   g++ -O1 -I/usr/include/stb fuzz/make_image_seeds.cpp -ljpeg -o /tmp/mk && /tmp/mk
//   fuzz/seeds/image
#include <jpeglib.h>

#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

static std::vector<unsigned char> pattern(int w, int h, int c) {
  std::vector<unsigned char> p(size_t(w) * h * c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k)
        p[(size_t(y) * w + x) * c + k] = (unsigned char)(x * 20 + y * 7 + k * 60);
  return p;
}

static void jpeg(const std::string& path, int w, int h, int c, int hs, bool progressive,
                 int restart) {
  jpeg_compress_struct ci;
  jpeg_error_mgr err;
  ci.err = jpeg_std_error(&err);
  jpeg_create_compress(&ci);
  FILE* f = std::fopen(path.c_str(), "wb");
  jpeg_stdio_dest(&ci, f);
  ci.image_width = w;
  ci.image_height = h;
  ci.input_components = c;
  ci.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&ci);
  jpeg_set_quality(&ci, 75, TRUE);
  if (c == 3) {
    ci.comp_info[0].h_samp_factor = hs;
    ci.comp_info[0].v_samp_factor = hs;
  }
  if (progressive) jpeg_simple_progression(&ci);
  ci.restart_interval = restart;
  jpeg_start_compress(&ci, TRUE);
  const auto p = pattern(w, h, c);
  while (ci.next_scanline < ci.image_height) {
    JSAMPROW row = const_cast<unsigned char*>(p.data()) + size_t(ci.next_scanline) * w * c;
    jpeg_write_scanlines(&ci, &row, 1);
  }
  jpeg_finish_compress(&ci);
  jpeg_destroy_compress(&ci);
  std::fclose(f);
}

int main(int argc, char** argv) {
  const std::string d = argc > 1 ? argv[1] : ".";
  stbi_write_png((d + "/rgb.png").c_str(), 12, 8, 3, pattern(12, 8, 3).data(), 12 * 3);
  stbi_write_png((d + "/gray.png").c_str(), 12, 8, 1, pattern(12, 8, 1).data(), 12);
  stbi_write_png((d + "/graya.png").c_str(), 5, 4, 2, pattern(5, 4, 2).data(), 5 * 2);
  stbi_write_png((d + "/rgba.png").c_str(), 5, 4, 4, pattern(5, 4, 4).data(), 5 * 4);
  stbi_write_bmp((d + "/rgb.bmp").c_str(), 6, 5, 3, pattern(6, 5, 3).data());
  stbi_write_tga((d + "/rgb.tga").c_str(), 6, 5, 3, pattern(6, 5, 3).data());
  jpeg(d + "/s420.jpg", 17, 9, 3, 2, false, 0);
  jpeg(d + "/s444.jpg", 9, 7, 3, 1, false, 0);
  jpeg(d + "/gray.jpg", 9, 7, 1, 1, false, 0);
  jpeg(d + "/prog.jpg", 17, 9, 3, 2, true, 0);
  jpeg(d + "/restart.jpg", 33, 17, 3, 2, false, 1);
  return 0;
}
