// Read-only memory mapping shared by the checkpoint readers (safetensors.cpp, pth.cpp).
#include "engine/checkpoint_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/error.h"

namespace hr::io::detail {

MappedFile map_file(const std::string& path, const char* what) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  HR_CHECK(fd >= 0, what, " ", path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(str_cat(what, " ", path, ": cannot stat: ", std::strerror(e)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(str_cat(what, " ", path, ": not a regular file"));
  }
  MappedFile m;
  m.size = static_cast<size_t>(st.st_size);
  if (m.size == 0) {
    ::close(fd);
    return m;
  }
  void* p = ::mmap(nullptr, m.size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);
  HR_CHECK(p != MAP_FAILED, what, " ", path, ": mmap of ", m.size, " bytes failed: ",
           std::strerror(e));
  size_t len = m.size;
  m.keep = std::shared_ptr<const void>(p, [len](const void* q) { ::munmap(const_cast<void*>(q), len); });
  m.data = static_cast<const uint8_t*>(p);
  return m;
}

}  // namespace hr::io::detail
