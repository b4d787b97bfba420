// libFuzzer: the INI reader and its merge into Boost.Program_options. Any input either
// parses or throws UsageError; nothing else may escape.
#include <cstdint>
#include <sstream>
#include <string>

#include "common/config.hpp"
#include "common/error.hpp"

namespace po = boost::program_options;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const po::options_description desc = [] {
    po::options_description d;
    d.add_options()("transport", po::value<std::string>())("workers", po::value<long long>())(
        "history", po::value<long long>())("log-level", po::value<std::string>());
    return d;
  }();
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  try {
    const auto entries = chat::parse_ini(in, "fuzz.conf");
    po::variables_map vm;
    chat::store_ini("fuzz.conf", entries, desc, vm);
    po::notify(vm);
  } catch (const chat::UsageError&) {
    // the expected way to reject input
  }
  return 0;
}
