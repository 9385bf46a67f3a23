#include "engine/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "engine/error.h"

namespace hr {

namespace fs = std::filesystem;

void write_file_atomic(const std::string& path, const void* data, size_t size,
                       const std::string& what) {
  // Same directory as the target so that rename is atomic; unique per process and call.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = str_cat(path, ".tmp.", long(::getpid()), ".", counter.fetch_add(1));
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(str_cat(what, ": ", std::strerror(errno)));
  const bool wrote = std::fwrite(data, 1, size, f) == size;
  int e = errno;
  const bool closed = std::fclose(f) == 0;
  if (!closed && wrote) e = errno;
  if (!wrote || !closed) {
    std::remove(tmp.c_str());
    throw Error(str_cat(what, ": ", std::strerror(e)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    e = errno;
    std::remove(tmp.c_str());
    throw Error(str_cat(what, ": ", std::strerror(e)));
  }
}

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      static const char* hex = "0123456789abcdef";
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// ---------------------------------------------------------------------------------------------
// Stale temp files
// ---------------------------------------------------------------------------------------------
long temp_file_writer(const std::string& name) {
  const size_t at = name.rfind(".tmp.");
  if (at == std::string::npos || at == 0) return -1;
  const std::string rest = name.substr(at + 5);
  size_t i = 0;
  long pid = 0;
  while (i < rest.size() && std::isdigit(static_cast<unsigned char>(rest[i]))) {
    if (pid > (1L << 30)) return -1;  // no pid is that large
    pid = pid * 10 + (rest[i++] - '0');
  }
  if (i == 0 || pid <= 0) return -1;
  if (i == rest.size()) return pid;
  if (rest[i] != '.' || i + 1 == rest.size()) return -1;
  for (size_t j = i + 1; j < rest.size(); ++j)
    if (!std::isdigit(static_cast<unsigned char>(rest[j]))) return -1;
  return pid;
}

namespace {

// Whether process `pid` holds `file` (a canonical path) open: 1 yes, 0 no, -1 cannot tell.
int holds_open(long pid, const std::string& file) {
  const std::string fd_dir = str_cat("/proc/", pid, "/fd");
  DIR* d = ::opendir(fd_dir.c_str());
  if (!d) return -1;
  int found = 0;
  char target[4096];
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string link = fd_dir + "/" + e->d_name;
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n > 0 && std::string(target, size_t(n)) == file) {
      found = 1;
      break;
    }
  }
  ::closedir(d);
  return found;
}

void scan_stale(const fs::path& dir, int depth, double min_age_s, std::vector<std::string>& out) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const fs::directory_entry& e = *it;
    std::error_code ec2;
    if (e.is_symlink(ec2)) continue;
    if (e.is_directory(ec2)) {
      if (depth > 0) scan_stale(e.path(), depth - 1, min_age_s, out);
      continue;
    }
    if (!e.is_regular_file(ec2)) continue;
    const long pid = temp_file_writer(e.path().filename().string());
    if (pid < 0) continue;
    std::string why;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      why = "no such process";
    } else {
      // a running process of that pid: a later one, or the writer still writing
      const fs::path canon = fs::canonical(e.path(), ec2);
      if (ec2 || holds_open(pid, canon.string()) != 0) continue;
      struct stat st;
      if (::stat(e.path().c_str(), &st) != 0) continue;
      const double age = std::difftime(std::time(nullptr), st.st_mtime);
      if (age < min_age_s) continue;  // it may be between writing and renaming
      why = str_cat("not open in that process, unchanged for ", static_cast<long>(age), " s");
    }
    if (::unlink(e.path().c_str()) == 0)
      out.push_back(str_cat(e.path().string(), " (pid ", pid, ", ", why, ")"));
  }
}

}  // namespace

std::vector<std::string> remove_stale_temp_files(const std::string& dir, int depth,
                                                 double min_age_s) {
  std::vector<std::string> out;
  scan_stale(fs::path(dir), depth, min_age_s, out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// LineLog
// ---------------------------------------------------------------------------------------------
LineLog::LineLog(std::string path, WriteFn write)
    : path_(std::move(path)), write_(write ? write : static_cast<WriteFn>(::write)) {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  HR_CHECK(fd_ >= 0, "cannot open ", path_, " for writing: ", std::strerror(errno));
  struct stat st;
  regular_ = ::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
  if (!regular_ || st.st_size == 0) return;
  // a cut last line (a writer killed mid-line): cut back to the last newline
  off_t end = st.st_size, keep = 0;
  char buf[4096];
  bool readable = true;
  while (end > 0) {
    const off_t from = std::max<off_t>(0, end - off_t(sizeof buf));
    const ssize_t n = ::pread(fd_, buf, size_t(end - from), from);
    if (n != end - from) {
      readable = false;  // write-only: leave it
      break;
    }
    const char* nl = static_cast<const char*>(::memrchr(buf, '\n', size_t(n)));
    if (nl) {
      keep = from + (nl - buf) + 1;
      break;
    }
    end = from;
  }
  if (!readable || keep == st.st_size) return;
  HR_CHECK(::ftruncate(fd_, keep) == 0, "cannot write ", path_, ": cannot remove its cut last line: ",
           std::strerror(errno));
  cut_ = size_t(st.st_size - keep);
}

LineLog::~LineLog() {
  if (fd_ >= 0) ::close(fd_);
}

void LineLog::append(const std::string& line) {
  HR_CHECK(fd_ >= 0, "cannot write ", path_, ": closed");
  const std::string s = line + "\n";
  struct stat st;
  const off_t before = regular_ && ::fstat(fd_, &st) == 0 ? st.st_size : -1;
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = write_(fd_, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = n < 0 ? errno : ENOSPC;
      std::string undo;
      if (before >= 0 && ::ftruncate(fd_, before) != 0)
        undo = str_cat(" (and its cut last line could not be removed: ", std::strerror(errno), ")");
      throw Error(str_cat("cannot write ", path_, ": ", std::strerror(e), undo));
    }
    done += size_t(n);
  }
}

void LineLog::sync() {
  if (fd_ >= 0 && regular_ && ::fsync(fd_) != 0)
    throw Error(str_cat("cannot write ", path_, ": ", std::strerror(errno)));
}

void LineLog::close() {
  if (fd_ < 0) return;
  sync();
  const int rc = ::close(fd_);
  fd_ = -1;
  HR_CHECK(rc == 0, "cannot write ", path_, ": ", std::strerror(errno));
}

// ---------------------------------------------------------------------------------------------
// DirLock
// ---------------------------------------------------------------------------------------------
DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);
}

DirLock& DirLock::operator=(DirLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}

DirLock DirLock::acquire(const std::string& dir, const std::string& name) {
  DirLock l;
  l.path_ = (fs::path(dir) / name).string();
  l.fd_ = ::open(l.path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  HR_CHECK(l.fd_ >= 0, "cannot create the lock file ", l.path_, ": ", std::strerror(errno));
  if (::flock(l.fd_, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    if (e != EWOULDBLOCK) throw Error(str_cat("cannot lock ", l.path_, ": ", std::strerror(e)));
    char buf[32] = {};
    const ssize_t n = ::pread(l.fd_, buf, sizeof buf - 1, 0);
    long pid = -1;
    if (n > 0) pid = std::strtol(buf, nullptr, 10);
    std::string who = "another process";
    if (pid > 0) {
      std::ifstream comm(str_cat("/proc/", pid, "/comm"));
      std::string c;
      if (std::getline(comm, c) && !c.empty()) who = c;
    }
    Busy b(str_cat(dir, " is in use by ", who, " (pid ", pid > 0 ? std::to_string(pid) : "unknown",
                   ", holding ", l.path_, ")"));
    b.pid = pid;
    throw b;
  }
  const std::string me = str_cat(long(::getpid()), "\n");
  HR_CHECK(::ftruncate(l.fd_, 0) == 0 &&
               ::pwrite(l.fd_, me.data(), me.size(), 0) == ssize_t(me.size()),
           "cannot write the lock file ", l.path_, ": ", std::strerror(errno));
  return l;
}

}  // namespace hr
