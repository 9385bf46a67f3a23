// hrnet-train's outputs under interruption, failure and concurrent runs (issue 18), run as a
// user runs the programs, on a tiny synthetic pose set (hrnet-synth):
//   - every metrics.jsonl write checked: /dev/full, or a file size limit that cuts a line, stops
//     the run with one line naming the file, and leaves no cut line;
//   - the temp files of atomic writes whose writer is gone are removed when a run starts;
//   - one run per output directory (train.lock): a second is refused naming the directory and
//     the first run's pid; a killed run's lock blocks nobody; hrnet-eval reads meanwhile;
//   - a refused --resume writes nothing;
//   - SIGINT stops at a step boundary with a mid-epoch checkpoint, exit 130, and --resume ends
//     with the uninterrupted run's weights bit for bit and its metrics, nothing repeated; after a
//     SIGKILL mid-epoch the repeated iterations are marked "resumed":true; a second signal exits
//     at once;
//   - numeric config keys out of range are refused in one line naming the key and the file;
//   - SIGINT during the last evaluation stops it with a checkpoint, and --resume evaluates again
//     and ends as the uninterrupted run;
//   - the soak: damaged images every few samples and a disk (tmpfs) filling near the end.
// And the file_util pieces underneath (LineLog with an injected failing write, the temp names).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "app_runner.h"
#include "engine/checkpoint.h"
#include "engine/error.h"
#include "engine/file_util.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace hr;
using hr::test::Run;
using hr::test::slurp;

namespace {

const fs::path kWork =
    fs::temp_directory_path() / ("hr_test_reliability_train_" + std::to_string(::getpid()));

struct Cleanup {
  ~Cleanup() {
    std::error_code ec;
    fs::remove_all(kWork, ec);
  }
} cleanup;

Run run(const std::string& exe, const std::string& args) {
  return hr::test::run_program(exe, args, (kWork / "cmd").string());
}

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

std::string last_line(std::string s) {
  while (!s.empty() && s.back() == '\n') s.pop_back();
  const size_t nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

// The data of test_pose_apps' tiny pose model (tiny_pose_config): 30 training images, 13
// iterations an epoch.
const std::string& dataset() {
  static std::string root = [] {
    fs::remove_all(kWork);
    fs::create_directories(kWork);
    const std::string r = (kWork / "synth").string();
    Run g = run(HR_SYNTH_EXE, "--out " + r + " --train 30 --val 4 --seed 5 --width 160 --height 120");
    INFO(g.err);
    REQUIRE(g.code == 0);
    return r;
  }();
  return root;
}

const std::string& config() {
  static std::string path = [] {
    const std::string text = hr::test::tiny_pose_config(dataset());  // dataset() makes kWork
    const std::string p = (kWork / "tiny.yaml").string();
    std::ofstream(p) << text;
    return p;
  }();
  return path;
}

// The uninterrupted run the interrupted ones are compared with.
struct Trained {
  std::string dir;
  Run run;
};
const Trained& uninterrupted() {
  static Trained t = [] {
    Trained r;
    r.dir = (kWork / "full").string();
    r.run = run(HR_TRAIN_EXE, "--cfg " + config() + " --out " + r.dir);
    INFO(r.run.err);
    REQUIRE(r.run.code == 0);
    return r;
  }();
  return t;
}

// A program started in the background (its pid is the program's: sh execs it).
struct Background {
  pid_t pid = -1;
  std::string out, err;
  int code = -1000;  // exit status once waited for; 128 + signal when killed by one
  // Whether it has ended (not reaped: wait() still gives its status).
  bool ended() const {
    siginfo_t si{};
    return pid > 0 && ::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           si.si_pid == pid;
  }
  // Waits for it to end (SIGKILL after timeout_s); returns the exit status.
  int wait(double timeout_s = 600) {
    if (pid < 0) return code;
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    int st = 0;
    for (;;) {
      const pid_t r = ::waitpid(pid, &st, WNOHANG);
      if (r == pid) break;
      if (r < 0) {
        pid = -1;
        return code = -1;
      }
      if (std::chrono::steady_clock::now() > until) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &st, 0);
        break;
      }
      ::usleep(5000);
    }
    pid = -1;
    code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return code;
  }
  ~Background() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

Background start(const std::string& exe, const std::string& args, const std::string& name,
                 void (*before_exec)() = nullptr) {
  Background b;
  b.out = (kWork / (name + "_stdout.txt")).string();
  b.err = (kWork / (name + "_stderr.txt")).string();
  const std::string cmd = "exec " + exe + " " + args + " >" + b.out + " 2>" + b.err;
  b.pid = ::fork();
  REQUIRE(b.pid >= 0);
  if (b.pid == 0) {
    if (before_exec) before_exec();
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return b;
}

// Polls until pred() holds (true) or timeout_s passes (false).
bool wait_until(const std::function<bool()>& pred, double timeout_s = 600) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    ::usleep(3000);
  }
  return true;
}

std::vector<std::string> log_lines(const std::string& dir, const std::string& type = "") {
  std::istringstream in(slurp(dir + "/metrics.jsonl"));
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    if (type.empty() || line.find("\"type\":\"" + type + "\"") != std::string::npos)
      out.push_back(line);
  return out;
}

// "key":value (number or word) of a JSON line, as text; "" when absent.
std::string field(const std::string& line, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  const size_t at = line.find(k);
  if (at == std::string::npos) return "";
  const size_t from = at + k.size();
  return line.substr(from, line.find_first_of(",}", from) - from);
}

// The train lines' epoch/iter/step/loss/avg_loss/lr: what an interrupted run must reproduce.
std::vector<std::string> train_record(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& l : log_lines(dir, "train"))
    out.push_back(field(l, "epoch") + "/" + field(l, "iter") + "/" + field(l, "step") + " " +
                  field(l, "loss") + " " + field(l, "avg_loss") + " " + field(l, "lr"));
  return out;
}
std::vector<std::string> epoch_record(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& l : log_lines(dir, "epoch"))
    out.push_back(field(l, "epoch") + " " + field(l, "loss") + " " + field(l, "samples"));
  return out;
}

void same_weights(const std::string& a, const std::string& b) {
  const NamedTensors x = load_checkpoint(a), y = load_checkpoint(b);
  REQUIRE(x.size() == y.size());
  for (size_t i = 0; i < x.size(); ++i) {
    INFO(x[i].first);
    REQUIRE(x[i].first == y[i].first);
    REQUIRE(x[i].second.to_vector() == y[i].second.to_vector());
  }
}

// Every file under dir with its bytes.
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) m[fs::relative(e.path(), dir).string()] = slurp(e.path().string());
  return m;
}

constexpr rlim_t kFsizeLimit = 1 << 20;

// A pid no process has (a child that has ended and been reaped).
long dead_pid() {
  const pid_t p = ::fork();
  if (p == 0) ::_exit(0);
  ::waitpid(p, nullptr, 0);
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The pieces in engine/file_util
// ---------------------------------------------------------------------------------------------
namespace {
int g_writes = 0;
// writes half of what it is given, then fails as a full disk does
ssize_t half_then_full(int fd, const void* data, size_t n) {
  if (g_writes++ == 0) return ::write(fd, data, std::max<size_t>(1, n / 2));
  errno = ENOSPC;
  return -1;
}
}  // namespace

TEST_CASE("LineLog: a failed write leaves no cut line; a cut line left behind is removed",
          "[reliability]") {
  hr::test::TempDir d;
  const std::string path = (d.path / "metrics.jsonl").string();
  {
    LineLog log(path);
    log.append("{\"a\":1}");
    log.close();
  }
  {
    g_writes = 0;
    LineLog log(path, half_then_full);
    try {
      log.append("{\"b\":2222222222222222}");
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(std::string(e.what()) == "cannot write " + path + ": No space left on device");
    }
    CHECK(g_writes == 2);
  }
  CHECK(slurp(path) == "{\"a\":1}\n");
  // a writer killed mid-line: the next opening removes the cut line
  std::ofstream(path, std::ios::app) << "{\"c\":3";
  {
    LineLog log(path);
    CHECK(log.cut_bytes() == 6);
    log.append("{\"d\":4}");
  }
  CHECK(slurp(path) == "{\"a\":1}\n{\"d\":4}\n");
  // a file of one cut line
  std::ofstream(path, std::ios::trunc) << "{\"e\":";
  CHECK(LineLog(path).cut_bytes() == 5);
  CHECK(slurp(path).empty());
  // /dev/full: the error names the file
  if (fs::exists("/dev/full")) {
    LineLog full("/dev/full");
    CHECK_THROWS_WITH(full.append("{}"), "cannot write /dev/full: No space left on device");
  }
}

TEST_CASE("the temp files of atomic writers: names, and the stale ones removed", "[reliability]") {
  CHECK(temp_file_writer("checkpoint.safetensors.tmp.123") == 123);
  CHECK(temp_file_writer("config.yaml.tmp.77.4") == 77);
  CHECK(temp_file_writer("a.tmp.b.tmp.9") == 9);
  for (const char* no : {".tmp.12", "x.tmp.", "x.tmp.12x", "x.tmp.12.", "x.tmp.0", "x.tmp",
                         "x.tmp.1.2.3", "x.tmp.99999999999999999999"}) {
    INFO(no);
    CHECK(temp_file_writer(no) == -1);
  }
  hr::test::TempDir d;
  fs::create_directories(d.path / "results" / "deeper" / "too_deep");
  const long dead = dead_pid(), me = ::getpid();
  auto plant = [&](const fs::path& p) {
    std::ofstream(p) << "partial";
    return p;
  };
  const fs::path gone1 = plant(d.path / ("checkpoint.safetensors.tmp." + std::to_string(dead)));
  const fs::path gone2 = plant(d.path / "results" / ("r.json.tmp." + std::to_string(dead) + ".3"));
  const fs::path deep = plant(d.path / "results" / "deeper" / "too_deep" / ("x.tmp." + std::to_string(dead)));
  // this process is alive: a file it holds open is being written; one it does not hold is stale
  // once unchanged for min_age_s
  const fs::path held = plant(d.path / ("model.tmp." + std::to_string(me)));
  const int fd = ::open(held.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  const fs::path fresh = plant(d.path / ("fresh.tmp." + std::to_string(me) + ".1"));
  const fs::path old = plant(d.path / ("old.tmp." + std::to_string(me) + ".2"));
  fs::last_write_time(old, fs::file_time_type::clock::now() - std::chrono::hours(2));
  const fs::path other = plant(d.path / "notes.tmp.txt");
  const std::vector<std::string> removed = remove_stale_temp_files(d.path.string(), 1, 60);
  ::close(fd);
  CHECK(removed.size() == 3);
  for (const fs::path& p : {gone1, gone2, old}) {
    INFO(p);
    CHECK_FALSE(fs::exists(p));
    CHECK(std::count_if(removed.begin(), removed.end(), [&](const std::string& r) {
            return r.rfind(p.string() + " (pid ", 0) == 0;
          }) == 1);
  }
  for (const fs::path& p : {deep, held, fresh, other}) {
    INFO(p);
    CHECK(fs::exists(p));
  }
}

TEST_CASE("DirLock: one holder; the second is told who holds it", "[reliability]") {
  hr::test::TempDir d;
  {
    DirLock a = DirLock::acquire(d.path.string(), "x.lock");
    CHECK(a.held());
    CHECK(slurp((d.path / "x.lock").string()) == std::to_string(::getpid()) + "\n");
    // flock locks belong to an open file: a second opening in this process is refused too
    try {
      DirLock::acquire(d.path.string(), "x.lock");
      FAIL("acquired twice");
    } catch (const DirLock::Busy& e) {
      CHECK(e.pid == ::getpid());
      CHECK(std::string(e.what()).find(d.path.string() + " is in use by ") == 0);
      CHECK(std::string(e.what()).find("(pid " + std::to_string(::getpid())) != std::string::npos);
    }
  }
  // released with its holder
  CHECK(DirLock::acquire(d.path.string(), "x.lock").held());
}

// ---------------------------------------------------------------------------------------------
// hrnet-train
// ---------------------------------------------------------------------------------------------
TEST_CASE("hrnet-train: a failed metrics write stops the run in one line, no cut line",
          "[reliability][apps]") {
  const std::string cfg = config();  // makes the data first (it clears the work directory)
  SECTION("metrics.jsonl on /dev/full") {
    if (!fs::exists("/dev/full")) return;
    const fs::path out = kWork / "devfull";
    fs::create_directories(out);
    fs::create_symlink("/dev/full", out / "metrics.jsonl");
    Run r = run(HR_TRAIN_EXE, "--cfg " + config() + " --out " + out.string() + " TRAIN.END_EPOCH 1");
    CHECK(r.code == 1);
    CHECK(last_line(r.err) ==
          "hrnet-train: cannot write " + out.string() + "/metrics.jsonl: No space left on device");
    CHECK_FALSE(fs::exists(out / "final_state.safetensors"));
  }
  SECTION("the results table on a full standard output") {
    if (!fs::exists("/dev/full")) return;
    const std::string err = (kWork / "stdout_full_err.txt").string();
    const int rc = std::system((std::string(HR_TRAIN_EXE) + " --cfg " + config() + " --out " +
                                (kWork / "stdout_full").string() + " TRAIN.END_EPOCH 1 >/dev/full 2>" + err)
                                   .c_str());
    CHECK((WIFEXITED(rc) && WEXITSTATUS(rc) == 1));
    CHECK(last_line(slurp(err)) ==
          "hrnet-train: cannot write the results to standard output: No space left on device");
  }
  SECTION("a file size limit that cuts a line (as a disk filling up)") {
    // the limit falls inside the first train line: the start line fits, that one does not
    const fs::path out = kWork / "fsize";
    fs::create_directories(out);
    const size_t limit = kFsizeLimit;
    const std::string note = "{\"type\":\"note\"}\n";
    std::string prefill;
    while (prefill.size() + note.size() <= limit - 130) prefill += note;
    std::ofstream(out / "metrics.jsonl") << prefill;
    Background b = start(HR_TRAIN_EXE, "--cfg " + config() + " --out " + out.string() + " TRAIN.END_EPOCH 1",
                         "fsize", [] {
                           const rlimit lim{kFsizeLimit, kFsizeLimit};
                           ::setrlimit(RLIMIT_FSIZE, &lim);
                           ::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead, as a full disk gives ENOSPC
                         });
    CHECK(b.wait() == 1);
    const std::string e = slurp(b.err);
    INFO(e);
    CHECK(last_line(e) == "hrnet-train: cannot write " + out.string() + "/metrics.jsonl: File too large");
    const std::string log = slurp((out / "metrics.jsonl").string());
    REQUIRE(log.size() > prefill.size());  // the start line went in
    CHECK(log.back() == '\n');
    std::istringstream in(log);
    std::string bad;
    for (std::string line; std::getline(in, line);)
      if (line.empty() || line.front() != '{' || line.back() != '}') bad += line + "\n";
    CHECK(bad.empty());
    CHECK(log_lines(out.string(), "train").empty());
  }
}

TEST_CASE("hrnet-train: a refused --resume writes nothing", "[reliability][apps]") {
  const Trained& t = uninterrupted();
  // another seed would draw another sample order: refused after the checkpoint is read, before
  // config.yaml or metrics.jsonl are touched
  const auto before = snapshot(t.dir);
  Run r = run(HR_TRAIN_EXE, "--cfg " + config() + " --out " + t.dir + " --resume ENGINE.SEED 9");
  CHECK(r.code == 1);
  CHECK(last_line(r.err).find("checkpoint.safetensors: made with ENGINE.SEED 3, this run has 9") !=
        std::string::npos);
  auto after = snapshot(t.dir);
  // the lock file holds the pid of the last process that took it: the one thing that changed
  after.erase("train.lock");
  auto expect = before;
  expect.erase("train.lock");
  CHECK(after == expect);
  // nothing to resume: refused before the directory is made
  const fs::path none = kWork / "resume_nothing";
  Run n = run(HR_TRAIN_EXE, "--cfg " + config() + " --out " + none.string() + " --resume");
  CHECK(n.code == 1);
  CHECK(count_lines(n.err) == 1);
  CHECK(n.err.find("--resume: no checkpoint at " + none.string()) != std::string::npos);
  CHECK_FALSE(fs::exists(none));
}

TEST_CASE("hrnet-train: SIGINT stops mid-epoch with a checkpoint; --resume ends bit for bit as "
          "the uninterrupted run; one run per output directory",
          "[reliability][apps]") {
  const Trained& full = uninterrupted();
  const std::string dir = (kWork / "sigint").string();
  Background b = start(HR_TRAIN_EXE, "--cfg " + config() + " --out " + dir, "sigint");
  // stop it (SIGSTOP) just after an iteration of the second epoch
  REQUIRE(wait_until([&] {
    for (const auto& l : log_lines(dir, "train"))
      if (field(l, "epoch") == "1") return true;
    return b.ended();
  }));
  REQUIRE(::kill(b.pid, SIGSTOP) == 0);
  const size_t logged = log_lines(dir, "train").size();

  // a second run on the same directory is refused, naming it and the first run's pid
  Run second = run(HR_TRAIN_EXE, "--cfg " + config() + " --out " + dir);
  CHECK(second.code == 1);
  CHECK(count_lines(second.err) == 1);
  CHECK(second.err.find("output directory " + dir + " is in use by hrnet-train (pid " +
                        std::to_string(b.pid) + ",") != std::string::npos);
  // hrnet-eval reads the running run's checkpoint meanwhile
  Run ev = run(HR_EVAL_EXE, "--cfg " + config() + " --out " + (kWork / "sigint_eval").string() +
                                " --weights " + dir + "/checkpoint.safetensors");
  INFO(ev.err);
  CHECK(ev.code == 0);

  // Ctrl-C: the step in flight ends, the position is saved, exit 130
  REQUIRE(::kill(b.pid, SIGINT) == 0);
  REQUIRE(::kill(b.pid, SIGCONT) == 0);
  CHECK(b.wait() == 130);
  const std::string err = slurp(b.err);
  INFO(err);
  const std::string said = last_line(err);
  CHECK(said.rfind("hrnet-train: stopped by SIGINT in epoch 2 of 2 at iteration ", 0) == 0);
  CHECK(said.find("; checkpoint " + dir + "/checkpoint.safetensors; resume with: ") != std::string::npos);
  CHECK(said.size() > 9);
  CHECK(said.substr(said.size() - 9) == " --resume");
  const auto stops = log_lines(dir, "stop");
  REQUIRE(stops.size() == 1);
  const int stopped_at = std::stoi(field(stops[0], "iter"));
  CHECK(field(stops[0], "epoch") == "1");
  CHECK(field(stops[0], "signal") == "\"SIGINT\"");
  // mid-epoch: after the logged iterations, before the epoch's end (13 iterations)
  const int logged_epoch1 = static_cast<int>(logged) - 13;
  CHECK(stopped_at >= logged_epoch1);
  CHECK(stopped_at < 13);
  CHECK(log_lines(dir, "train").size() == 13 + size_t(stopped_at));
  CHECK_FALSE(fs::exists(dir + "/final_state.safetensors"));

  // --resume: continues at that iteration; the same weights and metrics as never stopped
  Run r = run(HR_TRAIN_EXE, "--cfg " + config() + " --out " + dir + " --resume");
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.err.find("in epoch 2 at iteration " + std::to_string(stopped_at) + " of 13") != std::string::npos);
  same_weights(full.dir + "/final_state.safetensors", dir + "/final_state.safetensors");
  same_weights(full.dir + "/model_best.safetensors", dir + "/model_best.safetensors");
  CHECK(train_record(dir) == train_record(full.dir));  // nothing repeated, nothing missing
  CHECK(epoch_record(dir) == epoch_record(full.dir));
  for (const char* type : {"train", "epoch", "eval"})  // no line marked as repeated
    for (const auto& l : log_lines(dir, type)) CHECK(field(l, "resumed").empty());
  CHECK(log_lines(dir, "start").size() == 2);
}

TEST_CASE("hrnet-train: after a SIGKILL mid-epoch the lock is free, stale temp files are removed, "
          "and the repeated iterations are marked",
          "[reliability][apps]") {
  const Trained& full = uninterrupted();
  const std::string dir = (kWork / "sigkill").string();
  Background b = start(HR_TRAIN_EXE, "--cfg " + config() + " --out " + dir, "sigkill");
  REQUIRE(wait_until([&] {
    for (const auto& l : log_lines(dir, "train"))
      if (field(l, "epoch") == "1" && std::stoi(field(l, "iter")) >= 2) return true;
    return b.ended();
  }));
  REQUIRE(::kill(b.pid, SIGKILL) == 0);
  CHECK(b.wait() == 128 + SIGKILL);
  int64_t max_step = 0;
  for (const auto& l : log_lines(dir, "train")) max_step = std::max<int64_t>(max_step, std::stoll(field(l, "step")));
  // what a kill during a checkpoint write leaves, and a temp file another process is writing
  const std::string gone = std::to_string(dead_pid());
  std::ofstream(dir + "/checkpoint.safetensors.tmp." + gone) << "partial";
  std::ofstream(dir + "/results/keypoints_val2017_results.json.tmp." + gone + ".0") << "[";
  const std::string busy = dir + "/model_best.safetensors.tmp." + std::to_string(::getpid());
  std::ofstream(busy) << "being written";
  const int fd = ::open(busy.c_str(), O_RDONLY);

  Run r = run(HR_TRAIN_EXE, "--cfg " + config() + " --out " + dir + " --resume");
  ::close(fd);
  INFO(r.err);
  REQUIRE(r.code == 0);
  for (const std::string& f : {dir + "/checkpoint.safetensors.tmp." + gone,
                               dir + "/results/keypoints_val2017_results.json.tmp." + gone + ".0"}) {
    INFO(f);
    CHECK_FALSE(fs::exists(f));
    CHECK(r.err.find("hrnet-train: removed the temp file of an interrupted write: " + f + " (pid " +
                     gone + ", no such process)") != std::string::npos);
  }
  CHECK(fs::exists(busy));
  fs::remove(busy);
  CHECK(r.err.find("resumed from " + dir + "/checkpoint.safetensors at epoch 1") != std::string::npos);
  CHECK(r.err.find("the metrics of steps 14 to " + std::to_string(max_step) +
                   " are logged again, marked \"resumed\":true") != std::string::npos);
  same_weights(full.dir + "/final_state.safetensors", dir + "/final_state.safetensors");
  // the repeated train lines, and only they, are marked
  std::map<std::string, int> seen;
  int marked = 0;
  for (const auto& l : log_lines(dir, "train")) {
    const std::string step = field(l, "step");
    const bool repeat = seen[step]++ > 0;
    INFO(l);
    CHECK((field(l, "resumed") == "true") == repeat);
    marked += repeat;
  }
  CHECK(marked == max_step - 13);
  // the record without the repeats is the uninterrupted run's
  std::vector<std::string> unique;
  std::set<std::string> steps;
  for (const std::string& rec : train_record(dir))
    if (steps.insert(rec.substr(0, rec.find(' '))).second) unique.push_back(rec);
  CHECK(unique == train_record(full.dir));
}

TEST_CASE("hrnet-train: a second signal while stopping exits at once", "[reliability][apps]") {
  const std::string dir = (kWork / "twice").string();
  Background b = start(HR_TRAIN_EXE, "--cfg " + config() + " --out " + dir, "twice");
  REQUIRE(wait_until([&] {
    return !log_lines(dir, "train").empty() || b.ended();
  }));
  // both pending when it runs again: the first asks for a stop, the second ends it at once
  REQUIRE(::kill(b.pid, SIGSTOP) == 0);
  REQUIRE(::kill(b.pid, SIGINT) == 0);
  REQUIRE(::kill(b.pid, SIGTERM) == 0);
  REQUIRE(::kill(b.pid, SIGCONT) == 0);
  const int code = b.wait();
  CHECK((code == 128 + SIGINT || code == 128 + SIGTERM));
  const std::string said = last_line(slurp(b.err));
  CHECK(std::regex_search(said, std::regex("^hrnet-train: SIG(INT|TERM) while stopping: exiting at once$")));
  CHECK(log_lines(dir, "stop").empty());
  // the lock went with it
  CHECK(DirLock::acquire(dir, "train.lock").held());
}

TEST_CASE("hrnet-train refuses numeric config keys out of range in one line", "[reliability][apps]") {
  config();
  struct Bad {
    const char* args;
    const char* says;
  } cases[] = {
      {"WORKERS -1", "WORKERS must be in [0, 4096], got -1"},
      {"TRAIN.LR 0", "TRAIN.LR must be a number > 0, got 0"},
      {"TRAIN.LR -0.01", "TRAIN.LR must be a number > 0, got -0.01"},
      {"TRAIN.WD -0.1", "TRAIN.WD must be a number >= 0, got -0.1"},
      {"TRAIN.MOMENTUM -0.9", "TRAIN.MOMENTUM must be a number >= 0, got -0.9"},
      {"TRAIN.LR_FACTOR 0", "TRAIN.LR_FACTOR must be a number > 0, got 0"},
      {"ENGINE.THREADS -2", "ENGINE.THREADS must be in [0, 4096], got -2"},
      {"PRINT_FREQ 0", "PRINT_FREQ must be >= 1, got 0"},
      {"ENGINE.EVAL_EVERY 0", "ENGINE.EVAL_EVERY must be >= 1, got 0"},
      {"TRAIN.BEGIN_EPOCH -1", "TRAIN.END_EPOCH must be greater than TRAIN.BEGIN_EPOCH >= 0"},
      {"TRAIN.END_EPOCH 0", "TRAIN.END_EPOCH must be greater than TRAIN.BEGIN_EPOCH >= 0"},
  };
  const std::string out = (kWork / "bad_numbers").string();
  for (const Bad& b : cases) {
    INFO(b.args);
    Run r = run(HR_TRAIN_EXE, "--cfg " + config() + " --out " + out + " " + b.args);
    CHECK(r.code == 1);
    CHECK(r.err == "hrnet-train: [config] " + config() + ": " + b.says + "\n");
    CHECK_FALSE(fs::exists(out));
  }
}

// ---------------------------------------------------------------------------------------------
// The soak (issue 18 item 5): one training run on data with a corrupt image every few samples
// (truncated JPEGs, an empty file, a directory where an image should be) and an output directory
// on a small filesystem (tmpfs) that fills up near the end. The run finishes, or stops with one
// line naming the file it could not write; it leaves no temp file, no cut metrics line and no
// partial checkpoint; given room again, --resume ends with the uninterrupted run's weights bit for
// bit. Needs mount (root); skipped (exit 77) where tmpfs cannot be mounted.

// A tmpfs of `bytes` at dir, unmounted when it goes.
struct Tmpfs {
  std::string dir;
  bool ok = false;
  Tmpfs(const std::string& d, int64_t bytes) : dir(d) {
    fs::create_directories(dir);
    ok = std::system(("mount -t tmpfs -o size=" + std::to_string(bytes) + " tmpfs " + dir +
                      " 2>/dev/null").c_str()) == 0;
  }
  bool resize(int64_t bytes) {
    return std::system(("mount -o remount,size=" + std::to_string(bytes) + " " + dir).c_str()) == 0;
  }
  ~Tmpfs() {
    if (ok) std::system(("umount " + dir + " 2>/dev/null").c_str());
  }
};

int64_t bytes_under(const std::string& dir) {
  int64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) n += static_cast<int64_t>(e.file_size());
  return n;
}

// What a stopped or finished run leaves: no temp file of an atomic write, whole metrics lines
// (each a JSON object), every checkpoint readable in full.
void no_partial_files(const std::string& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    INFO(e.path());
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
    if (e.path().extension() == ".safetensors") CHECK_NOTHROW(load_checkpoint(e.path().string()));
  }
  const std::string metrics = slurp(dir + "/metrics.jsonl");
  CHECK((metrics.empty() || metrics.back() == '\n'));
  for (const std::string& l : log_lines(dir)) {
    INFO(l);
    CHECK((l.front() == '{' && l.back() == '}'));
  }
}

TEST_CASE("soak: corrupt images every few samples and a disk filling near the end",
          "[reliability][apps]") {
  // the data: the tiny set's images with every fifth damaged
  config();
  const fs::path root = kWork / "soak_data";
  fs::remove_all(root);
  fs::copy(dataset(), root, fs::copy_options::recursive);
  std::vector<fs::path> images;
  for (const char* split : {"train2017", "val2017"})
    for (const auto& e : fs::directory_iterator(root / "images" / split)) images.push_back(e.path());
  std::sort(images.begin(), images.end());
  int damaged = 0;
  for (size_t i = 2; i < images.size(); i += 5, ++damaged) {
    const fs::path& p = images[i];
    if (damaged == 1) {  // an empty file
      std::ofstream(p, std::ios::trunc);
    } else if (damaged == 2) {  // a directory where the image should be: unreadable
      fs::remove(p);
      fs::create_directory(p);
    } else {  // a JPEG cut in the middle of its data
      fs::resize_file(p, fs::file_size(p) / 2);
    }
  }
  REQUIRE(damaged >= 6);
  const std::string cfg = (kWork / "soak.yaml").string();
  std::ofstream(cfg) << hr::test::tiny_pose_config(root.string());
  const std::string epochs = " TRAIN.END_EPOCH 3";

  // the uninterrupted run, with room: it skips what it cannot read, says so, and finishes
  const std::string ref = (kWork / "soak_ref").string();
  Run full = run(HR_TRAIN_EXE, "--cfg " + cfg + " --out " + ref + epochs);
  INFO(full.err);
  REQUIRE(full.code == 0);
  CHECK(full.err.find("corrupt samples skipped in epoch 1") != std::string::npos);
  CHECK(full.err.find("hrnet-train: skipped: ") != std::string::npos);
  int64_t skipped = 0;
  for (const std::string& l : log_lines(ref, "epoch")) skipped += std::stoll(field(l, "skipped"));
  CHECK(skipped >= 3 * 4);  // the damaged training images, every epoch
  no_partial_files(ref);
  const int64_t written = bytes_under(ref);

  // the same run on filesystems too small for all it writes: full near the end, then earlier
  int stopped = 0;
  for (const double share : {0.9, 0.6}) {
    const std::string mnt = (kWork / ("soak_tmpfs_" + std::to_string(int(share * 100)))).string();
    Tmpfs disk(mnt, static_cast<int64_t>(share * double(written)));
    if (!disk.ok) {
      std::fprintf(stderr, "test_reliability_train: cannot mount a tmpfs (needs root): the soak "
                           "is skipped\n");
      std::exit(77);
    }
    const std::string out = mnt + "/run";
    INFO("filesystem of " << share << " x the " << written << " bytes the run writes");
    Run r = run(HR_TRAIN_EXE, "--cfg " + cfg + " --out " + out + epochs);
    INFO(r.err);
    no_partial_files(out);
    if (r.code == 0) continue;  // it fitted after all (temp files are removed as it goes)
    ++stopped;
    CHECK(r.code == 1);
    // one line: the file it could not write and why
    const std::string said = last_line(r.err);
    CHECK(std::regex_search(said, std::regex("^hrnet-train: .*" + mnt + "/run/.*No space left on "
                                             "device")));
    // given room again, it resumes from its last checkpoint and ends where the full run ended
    REQUIRE(disk.resize(4 * written));
    if (fs::exists(out + "/checkpoint.safetensors")) {
      Run again = run(HR_TRAIN_EXE, "--cfg " + cfg + " --out " + out + " --resume" + epochs);
      INFO(again.err);
      REQUIRE(again.code == 0);
      no_partial_files(out);
      same_weights(ref + "/final_state.safetensors", out + "/final_state.safetensors");
    }
  }
  CHECK(stopped >= 1);
}

TEST_CASE("hrnet-train: SIGINT during the last evaluation stops it with a checkpoint; --resume "
          "evaluates again and ends as the uninterrupted run",
          "[reliability][apps]") {
  const Trained& full = uninterrupted();
  std::string dir;
  // stop it (SIGSTOP) once the last epoch's line is written, before its evaluation line: the
  // evaluation is then under way (a few tries, should it have finished before the stop)
  bool during_eval = false;
  for (int attempt = 0; attempt < 5 && !during_eval; ++attempt) {
    dir = (kWork / ("sigint_eval_" + std::to_string(attempt))).string();
    Background b = start(HR_TRAIN_EXE, "--cfg " + config() + " --out " + dir, "sigint_eval");
    auto last_epoch_logged = [&] {
      for (const auto& l : log_lines(dir, "epoch"))
        if (field(l, "epoch") == "1") return true;
      return false;
    };
    REQUIRE(wait_until([&] { return last_epoch_logged() || b.ended(); }));
    REQUIRE(::kill(b.pid, SIGSTOP) == 0);
    during_eval = log_lines(dir, "eval").size() == 1;  // epoch 1's evaluation line not yet
    REQUIRE(::kill(b.pid, SIGINT) == 0);
    REQUIRE(::kill(b.pid, SIGCONT) == 0);
    const int code = b.wait();
    if (!during_eval) continue;
    CHECK(code == 130);
    const std::string said = last_line(slurp(b.err));
    INFO(said);
    CHECK(said.rfind("hrnet-train: stopped by SIGINT during the evaluation of epoch 2 of 2 "
                     "(step 26); checkpoint " + dir + "/checkpoint.safetensors; resume with: ",
                     0) == 0);
  }
  REQUIRE(during_eval);
  const auto stops = log_lines(dir, "stop");
  REQUIRE(stops.size() == 1);
  CHECK(field(stops[0], "epoch") == "1");
  CHECK(field(stops[0], "iter") == "13");  // every step of the epoch done
  CHECK(log_lines(dir, "eval").size() == 1);
  CHECK_FALSE(fs::exists(dir + "/final_state.safetensors"));

  // --resume: no step again; the epoch's line again (marked), its evaluation, the final outputs
  Run r = run(HR_TRAIN_EXE, "--cfg " + config() + " --out " + dir + " --resume");
  INFO(r.err);
  REQUIRE(r.code == 0);
  same_weights(full.dir + "/final_state.safetensors", dir + "/final_state.safetensors");
  same_weights(full.dir + "/model_best.safetensors", dir + "/model_best.safetensors");
  CHECK(train_record(dir) == train_record(full.dir));
  const auto epochs = log_lines(dir, "epoch");
  REQUIRE(epochs.size() == 3);
  CHECK(field(epochs[2], "resumed") == "true");
  CHECK(field(epochs[2], "loss") == field(epochs[1], "loss"));
  const auto evals = log_lines(dir, "eval"), full_evals = log_lines(full.dir, "eval");
  REQUIRE(evals.size() == 2);
  CHECK(field(evals[1], "AP") == field(full_evals[1], "AP"));
  no_partial_files(dir);
}
