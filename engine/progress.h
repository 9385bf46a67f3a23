// A progress line for long work: count/total, a bar, the rate, the ETA and caller-supplied
// fields (loss, lr, ...). On a terminal it redraws one line in place (at most ~10 times a
// second); otherwise (logs, CI) it prints a plain line every `log_every_s` seconds and at the end.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace hr {

class ProgressBar {
 public:
  // `unit` names what is counted ("img", "batch"); `total` <= 0: unknown (no bar, no ETA).
  ProgressBar(std::string label, int64_t total, std::string unit = "it", FILE* out = stderr,
              double log_every_s = 10.0);
  ~ProgressBar();  // finishes the line if finish() was not called
  // Advances by `n` and sets the extra text shown after the rate (e.g. "loss 0.0012").
  void update(int64_t n, const std::string& extra = std::string());
  void set_extra(const std::string& extra) { extra_ = extra; }
  void finish();
  double elapsed_s() const;
  double rate() const;  // units per second so far
  int64_t count() const { return count_; }

  // "1:02:03" / "02:03" for an ETA or elapsed time.
  static std::string format_duration(double seconds);

 private:
  void draw(bool final_line);
  std::string label_, unit_, extra_;
  int64_t total_, count_ = 0;
  FILE* out_;
  bool tty_;
  double log_every_s_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace hr
