// Implementation of the leveled logger (see log.h) and of the Error helpers in status.h.
#include "common/log.h"

#include <syslog.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>

#include "common/status.h"

namespace hubfs {

const char* ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNotFound: return "not-found";
    case ErrorKind::kAccessDenied: return "access-denied";
    case ErrorKind::kIo: return "io";
    case ErrorKind::kTimeout: return "timeout";
    case ErrorKind::kCancelled: return "cancelled";
    case ErrorKind::kInvalidArgument: return "invalid-argument";
    case ErrorKind::kNoSpace: return "no-space";
    case ErrorKind::kCorrupt: return "corrupt";
    case ErrorKind::kReadOnly: return "read-only";
    case ErrorKind::kNotDirectory: return "not-a-directory";
    case ErrorKind::kIsDirectory: return "is-a-directory";
    case ErrorKind::kNoAttribute: return "no-attribute";
  }
  return "unknown";
}

std::string Error::ToString() const {
  std::string s = ErrorKindName(kind);
  if (http_status != 0) s += " (HTTP " + std::to_string(http_status) + ")";
  if (curl_code != 0) s += " (curl " + std::to_string(curl_code) + ")";
  if (!message.empty()) s += ": " + message;
  return s;
}

namespace log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<bool> g_syslog{false};
std::mutex g_mu;
constexpr const char* kNames[] = {"E", "W", "I", "D"};
constexpr int kSyslogPrio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
}  // namespace

void SetLevel(Level level) { g_level = static_cast<int>(level); }
Level GetLevel() { return static_cast<Level>(g_level.load(std::memory_order_relaxed)); }

void UseSyslog(const char* ident) {
  openlog(ident, LOG_PID, LOG_DAEMON);
  g_syslog = true;
}

void Write(Level level, const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  const int l = static_cast<int>(level);
  if (g_syslog) {
    syslog(kSyslogPrio[l], "%s", buf);
    return;
  }
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm tmv{};
  gmtime_r(&ts.tv_sec, &tmv);
  std::lock_guard lock(g_mu);
  fprintf(stderr, "%02d:%02d:%02d.%03ld %s hubfs: %s\n", tmv.tm_hour, tmv.tm_min, tmv.tm_sec,
          ts.tv_nsec / 1000000, kNames[l], buf);
}

}  // namespace log
}  // namespace hubfs
