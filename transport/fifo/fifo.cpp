#include "transport/fifo/fifo.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "transport/fifo/channel.hpp"
#include "transport/fifo/client.hpp"
#include "transport/fifo/server.hpp"

namespace chat::transport::fifo {

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options) {
  return make_server(options);
}

std::unique_ptr<ClientConnection> connect(ConnectOptions options) {
  return make_client(std::move(options));
}

std::vector<std::string> cleanup(const CleanupOptions& options) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(options.dir, ec)) {
    const std::filesystem::path& p = entry.path();
    struct stat st {};
    if (!is_leftover_name(p.filename().string()) || ::lstat(p.c_str(), &st) != 0 ||
        !S_ISFIFO(st.st_mode) || st.st_uid != ::geteuid()) {
      continue;
    }
    if (::unlink(p.c_str()) == 0) removed.push_back("FIFO " + p.string());
  }
  return removed;
}

}  // namespace chat::transport::fifo
