// Whole-file writes that never leave a half-written file: the bytes go to a temp file in the
// target's directory (unique per process and call), which is renamed over the target; on any
// failure the temp file is removed. Large streaming writers with fsync (safetensors) and the
// streaming JSON writer (data/coco.cpp) have their own; this serves small outputs.
//
// Every atomic writer of the engine names its temp file <target>.tmp.<pid>[.<n>] (pid: the
// writer's process). A writer killed mid-write (kill -9, power loss) leaves it behind:
// remove_stale_temp_files() removes those whose writer is gone.
//
// Also here: a log of whole lines (metrics.jsonl) that is never left with a cut line, and the
// lock a program holds on a directory it writes (hrnet-train's output directory).
#pragma once
#include <sys/types.h>

#include <cstddef>
#include <string>
#include <vector>

#include "engine/error.h"

namespace hr {

// Throws hr::Error "<what>: <reason>" (what names the file, e.g. "cannot write image x.png").
void write_file_atomic(const std::string& path, const void* data, size_t size,
                       const std::string& what);

// s as a JSON string literal, quotes included (", \ and control characters escaped).
std::string json_quote(const std::string& s);

// The writer's pid when `name` (a file name, no directory) is an atomic writer's temp file,
// <target>.tmp.<pid> or <target>.tmp.<pid>.<n> with a non-empty target; -1 otherwise.
long temp_file_writer(const std::string& name);

// Removes the temp files of atomic writers that are gone, in `dir` and its subdirectories down to
// `depth` levels (1: dir's own subdirectories). A writer is gone when its pid is no running
// process, or when that process (a later one with the same pid, or this one) does not hold the
// file open and the file has not changed for `min_age_s` seconds. Returns one line per file
// removed ("<path> (pid <pid>, <why>)"); files it cannot remove or judge are left as they are.
std::vector<std::string> remove_stale_temp_files(const std::string& dir, int depth = 1,
                                                 double min_age_s = 60);

// A file of whole lines, appended to (metrics.jsonl: read while a run goes on). append() writes
// a line completely or not at all: when a write fails or falls short (a full disk, a file size
// limit), the file is cut back to its size before the line and hr::Error "cannot write <path>:
// <reason>" is thrown. Opening it removes a cut last line left by a writer killed mid-line
// (cut_bytes() says how many bytes; a file that is not a regular file, /dev/full, is left as it
// is). sync() flushes to the disk and reports the errors some file systems report only then.
class LineLog {
 public:
  using WriteFn = ssize_t (*)(int fd, const void* data, size_t n);  // ::write; tests inject one
  explicit LineLog(std::string path, WriteFn write = nullptr);
  ~LineLog();
  LineLog(const LineLog&) = delete;
  LineLog& operator=(const LineLog&) = delete;
  void append(const std::string& line);  // adds the '\n'
  void sync();
  // Closes the file, reporting a failed close; the destructor closes silently.
  void close();
  size_t cut_bytes() const { return cut_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  bool regular_ = false;
  size_t cut_ = 0;
  WriteFn write_;
};

// An exclusive lock on a directory for the life of this object (flock on the lock file DIR/NAME,
// which holds the holder's pid; the kernel releases it when the process ends, killed or crashed,
// so a dead holder blocks nobody). acquire() throws DirLock::Busy "<dir> is in use by <program>
// (pid <pid>)" when another process holds it, hr::Error naming the lock file when it cannot be
// made. The lock file stays (removing it would let two processes lock two different files).
class DirLock {
 public:
  struct Busy : Error {
    using Error::Error;
    long pid = -1;  // the holder's, -1 when it has not written it yet
  };
  DirLock() = default;
  ~DirLock();
  DirLock(DirLock&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }
  DirLock& operator=(DirLock&& o) noexcept;
  static DirLock acquire(const std::string& dir, const std::string& name);
  bool held() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace hr
