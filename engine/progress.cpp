#include "engine/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace hr {

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit, FILE* out,
                         double log_every_s)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      out_(out),
      tty_(out && isatty(fileno(out))),
      log_every_s_(log_every_s),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  if (!finished_) finish();
}

double ProgressBar::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double ProgressBar::rate() const {
  const double t = elapsed_s();
  return t > 0 ? count_ / t : 0.0;
}

std::string ProgressBar::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  return buf;
}

void ProgressBar::update(int64_t n, const std::string& extra) {
  count_ += n;
  if (!extra.empty()) extra_ = extra;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  const bool done = total_ > 0 && count_ >= total_;
  if (done) {
    finish();  // the final line, once
  } else if (since >= (tty_ ? 0.1 : log_every_s_)) {
    last_draw_ = now;
    draw(false);
  }
}

void ProgressBar::draw(bool final_line) {
  if (!out_) return;
  const double t = elapsed_s(), r = rate();
  std::string line = label_;
  if (total_ > 0) {
    const double frac = std::min(1.0, double(count_) / double(total_));
    constexpr int kWidth = 24;
    const int full = static_cast<int>(frac * kWidth);
    line += " [" + std::string(full, '#') + std::string(kWidth - full, '.') + "] ";
    char buf[96];
    std::snprintf(buf, sizeof buf, "%lld/%lld %3.0f%%", static_cast<long long>(count_),
                  static_cast<long long>(total_), 100.0 * frac);
    line += buf;
  } else {
    line += " " + std::to_string(count_);
  }
  char buf[128];
  std::snprintf(buf, sizeof buf, " | %.1f %s/s | %s", r, unit_.c_str(), format_duration(t).c_str());
  line += buf;
  if (total_ > 0 && !final_line)
    line += " ETA " + format_duration(r > 0 ? (total_ - count_) / r : -1);
  if (!extra_.empty()) line += " | " + extra_;
  if (tty_) {
    std::fprintf(out_, "\r%s\x1b[K%s", line.c_str(), final_line ? "\n" : "");
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
}

}  // namespace hr
