#include "server/service.hpp"

#include <cstdlib>

#ifdef IPCHAT_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace chat::server::service {
namespace {

// sd_notify() itself does nothing without NOTIFY_SOCKET; a failure to notify is not worth
// stopping the server for (systemd then reports the start as timed out, which says enough).
void notify([[maybe_unused]] const std::string& state) {
#ifdef IPCHAT_HAVE_SYSTEMD
  if (std::getenv("NOTIFY_SOCKET") == nullptr) return;
  (void)sd_notify(0, state.c_str());
#endif
}

// One line of STATUS=: a newline would start another assignment.
std::string status_line(std::string_view status) {
  std::string s(status);
  for (char& c : s) {
    if (c == '\n') c = ' ';
  }
  return s;
}

}  // namespace

void notify_ready(std::string_view status) {
  notify("READY=1\nSTATUS=" + status_line(status));
}

void notify_stopping(std::string_view status) {
  notify("STOPPING=1\nSTATUS=" + status_line(status));
}

std::string runtime_directory() {
  const char* env = std::getenv("RUNTIME_DIRECTORY");
  if (env == nullptr || env[0] != '/') return {};
  const std::string all = env;  // several RuntimeDirectory= entries are joined with ':'
  return all.substr(0, all.find(':'));
}

}  // namespace chat::server::service
