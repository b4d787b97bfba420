#include "common/error.hpp"

namespace chat {

void throw_system_error(std::string_view call, std::string_view object, int err) {
  std::string what(call);
  if (!object.empty()) {
    what += ' ';
    what += object;
  }
  throw std::system_error(err, std::generic_category(), what);
}

}  // namespace chat
