// The COCO file machinery of data/coco_io.h: reading the file, the record and image readers, the
// annotation file's root object, and the writer of its head.
#include "data/coco_io.h"

#include <sys/stat.h>

namespace hr::data::coco_io {

Source read_source(const std::string& path) {
  Source s;
  s.path = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) s.fail(str_cat("cannot open: ", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    s.fail("not a regular file");
  }
  const size_t n = static_cast<size_t>(st.st_size);
  if (n == 0) {
    ::close(fd);
    s.fail("empty file");
  }
  s.text = simdjson::padded_string(n);
  if (s.text.data() == nullptr) {
    ::close(fd);
    s.fail(str_cat("cannot allocate ", n, " bytes"));
  }
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, s.text.data() + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int e = errno;
      ::close(fd);
      s.fail(r == 0 ? std::string("file shrank while being read")
                    : str_cat("read error: ", std::strerror(e)));
    }
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  return s;
}

std::string simdjson_verdict(const Source& src, size_t begin, size_t end) {
  dom::parser parser;
  dom::element el;
  const auto err = parser.parse(src.data() + begin, end - begin, false).get(el);
  return err ? simdjson::error_message(err) : "";
}

dom::element parse_record(dom::parser& parser, const Source& src, Span s, const Name& what) {
  dom::element el;
  const auto err = parser.parse(src.data() + s.begin, s.end - s.begin, false).get(el);
  if (err) src.fail(str_cat("malformed JSON in ", what.str(), ": ", simdjson::error_message(err)));
  return el;
}

namespace {

CocoImage read_image(dom::element el, Record& r) {
  static constexpr Field<CocoImage> kFields[] = {
      field<&CocoImage::id>("id"), field<&CocoImage::file_name>("file_name"),
      field<&CocoImage::width>("width"), field<&CocoImage::height>("height")};
  const dom::object o = r.object(el);
  r.name_by_id(o, "image");
  CocoImage im;
  read_record(r, o, kFields, im);
  return im;
}

}  // namespace

void check_json(const Source& src, Span s, std::string_view key) {
  const std::string v = simdjson_verdict(src, s.begin, s.end);
  if (!v.empty()) src.fail(str_cat("malformed JSON in the value of \"", key, "\": ", v));
}

AnnotationSpans scan_annotation_file(const Source& src) {
  const Scanner sc(src);
  AnnotationSpans out;
  bool has_images = false, has_anns = false, has_cats = false;
  const size_t end = sc.object_members(sc.expect_root('{'), [&](std::string_view key, size_t v) {
    auto take = [&](std::vector<Span>& spans, bool& has) {
      if (has) src.fail(str_cat("duplicate key \"", key, "\""));
      has = true;
      size_t e = 0;
      spans = sc.array_elements(v, key, e);
      return e;
    };
    if (key == "images") return take(out.images, has_images);
    if (key == "annotations") return take(out.annotations, has_anns);
    if (key == "categories") return take(out.categories, has_cats);
    // info, licenses, ...: not kept, but must be valid JSON
    const std::string what = str_cat("the value of \"", key, "\"");
    const size_t e = sc.value_end(v, Name{what});
    check_json(src, Span{v, e}, key);
    return e;
  });
  sc.expect_end(end);
  if (!has_images) src.fail("no \"images\" list");
  if (out.images.empty()) src.fail("no images");
  return out;
}

std::vector<CocoImage> read_images(const Source& src, const std::vector<Span>& spans,
                                   dom::parser& parser) {
  std::vector<CocoImage> images;
  images.reserve(spans.size());
  for_each_record(src, spans, "images", parser,
                  [&](dom::element el, Record& r) { images.push_back(read_image(el, r)); });
  return images;
}

void write_annotation_file_head(AtomicJsonWriter& w, std::string_view description,
                                const std::vector<CocoImage>& images) {
  w.raw("{\"info\":{\"description\":\"").raw(description).raw("\",\"version\":\"1.0\"},\n");
  w.raw("\"licenses\":[],\n\"images\":[");
  for (size_t i = 0; i < images.size(); ++i) {
    const CocoImage& im = images[i];
    w.raw(i ? ",\n" : "\n")
        .raw("{\"id\":")
        .integer(im.id)
        .raw(",\"file_name\":")
        .string(im.file_name);
    w.raw(",\"width\":").integer(im.width).raw(",\"height\":").integer(im.height).raw("}");
  }
  w.raw("],\n\"annotations\":[");
}

}  // namespace hr::data::coco_io
