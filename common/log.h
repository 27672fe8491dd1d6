// Leveled logging: stderr in the foreground, syslog when daemonized. Cheap when a level is off
// (the format arguments are not evaluated). Callers never pass the token: fetch/ redacts URLs and
// never logs request headers.
#pragma once

#include <cstdarg>

namespace hubfs::log {

enum class Level : int { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

void SetLevel(Level level);
Level GetLevel();
void UseSyslog(const char* ident);  // switch from stderr to syslog(3)
void Write(Level level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace hubfs::log

#define HUBFS_LOG(level, ...)                                                       \
  do {                                                                              \
    if (static_cast<int>(level) <= static_cast<int>(::hubfs::log::GetLevel()))      \
      ::hubfs::log::Write(level, __VA_ARGS__);                                      \
  } while (0)
#define LOG_ERROR(...) HUBFS_LOG(::hubfs::log::Level::kError, __VA_ARGS__)
#define LOG_WARN(...) HUBFS_LOG(::hubfs::log::Level::kWarn, __VA_ARGS__)
#define LOG_INFO(...) HUBFS_LOG(::hubfs::log::Level::kInfo, __VA_ARGS__)
#define LOG_DEBUG(...) HUBFS_LOG(::hubfs::log::Level::kDebug, __VA_ARGS__)
