// INI files merged into Boost.Program_options (common/config.hpp).
#include "common/config.hpp"

#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "common/error.hpp"

namespace chat {
namespace po = boost::program_options;
namespace {

// A file with the given content under /tmp, removed when the object goes.
class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    char tmpl[] = "/tmp/ipchat-config-test.XXXXXX";
    const int fd = ::mkstemp(tmpl);
    if (fd < 0) throw std::runtime_error("mkstemp failed");
    ::close(fd);
    path_ = tmpl;
    std::ofstream(path_) << content;
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The shape of chatd's configurable options.
po::options_description options() {
  po::options_description d;
  d.add_options()                                                         //
      ("transport", po::value<std::string>()->default_value("cond"), "")  //
      ("workers", po::value<long long>()->default_value(2), "")           //
      ("history", po::value<long long>()->default_value(100), "")         //
      ("log-level", po::value<std::string>()->default_value("info"), "");
  return d;
}

// What UsageError `f` throws; fails the test if it throws nothing.
template <typename F>
std::string usage_error(F&& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  BOOST_ERROR("no UsageError thrown");
  return {};
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(config)

BOOST_AUTO_TEST_CASE(read_ini_skips_comments_blanks_and_sections) {
  TempFile f(
      "# a comment\n"
      "; another\n"
      "\n"
      "   \t\n"
      "[server]\n"
      "workers = 4\n"
      "  transport=uds  \r\n"
      "log-level =  debug = loud\n"
      "history=\n");
  const auto entries = read_ini(f.path());
  BOOST_TEST_REQUIRE(entries.size() == 4u);
  BOOST_TEST(entries[0].key == "workers");
  BOOST_TEST(entries[0].value == "4");
  BOOST_TEST(entries[0].line == 6);
  BOOST_TEST(entries[1].key == "transport");
  BOOST_TEST(entries[1].value == "uds");
  BOOST_TEST(entries[1].line == 7);
  BOOST_TEST(entries[2].key == "log-level");
  BOOST_TEST(entries[2].value == "debug = loud");  // split at the first '='
  BOOST_TEST(entries[3].key == "history");
  BOOST_TEST(entries[3].value == "");
  BOOST_TEST(entries[3].line == 9);
}

BOOST_AUTO_TEST_CASE(read_ini_rejects_a_line_without_equals) {
  TempFile f("# ok\nworkers = 2\nworkers 4\n");
  const std::string what = usage_error([&] { read_ini(f.path()); });
  BOOST_TEST(contains(what, f.path()), what);
  BOOST_TEST(contains(what, "line 3"), what);
}

BOOST_AUTO_TEST_CASE(read_ini_rejects_a_missing_key) {
  TempFile f("= 4\n");
  const std::string what = usage_error([&] { read_ini(f.path()); });
  BOOST_TEST(contains(what, "line 1"), what);
}

BOOST_AUTO_TEST_CASE(read_ini_rejects_a_missing_file) {
  const std::string what = usage_error([] { read_ini("/nonexistent/ipchat/chatd.conf"); });
  BOOST_TEST(contains(what, "/nonexistent/ipchat/chatd.conf"), what);
}

BOOST_AUTO_TEST_CASE(store_ini_fills_the_variables_map) {
  TempFile f("workers = 3\ntransport = uds\n");
  const auto desc = options();
  po::variables_map vm;
  store_ini(f.path(), read_ini(f.path()), desc, vm);
  po::notify(vm);
  BOOST_TEST(vm["workers"].as<long long>() == 3);
  BOOST_TEST(vm["transport"].as<std::string>() == "uds");
}

BOOST_AUTO_TEST_CASE(store_ini_unknown_key) {
  TempFile f("workers = 3\n\ncolour = red\n");
  const auto desc = options();
  po::variables_map vm;
  const std::string what = usage_error([&] { store_ini(f.path(), read_ini(f.path()), desc, vm); });
  BOOST_TEST(contains(what, "colour"), what);
  BOOST_TEST(contains(what, "line 3"), what);
  BOOST_TEST(contains(what, f.path()), what);
}

// Found by config_fuzz: Boost's error message substitutes the value into its template and
// looped forever on a value that looks like a placeholder. This hung before the fix.
BOOST_AUTO_TEST_CASE(store_ini_bad_value_that_looks_like_a_placeholder) {
  TempFile f("workers = %value%\n");
  const auto desc = options();
  po::variables_map vm;
  const std::string what = usage_error([&] { store_ini(f.path(), read_ini(f.path()), desc, vm); });
  BOOST_TEST(contains(what, "workers"), what);
  BOOST_TEST(contains(what, "line 1"), what);
  BOOST_TEST(contains(what, "%value%"), what);
}

BOOST_AUTO_TEST_CASE(store_ini_bad_value) {
  TempFile f("transport = uds\nworkers = abc\n");
  const auto desc = options();
  po::variables_map vm;
  const std::string what = usage_error([&] { store_ini(f.path(), read_ini(f.path()), desc, vm); });
  BOOST_TEST(contains(what, "workers"), what);
  BOOST_TEST(contains(what, "line 2"), what);
}

BOOST_AUTO_TEST_CASE(store_ini_duplicate_key) {
  TempFile f("workers = 2\nhistory = 5\nworkers = 3\n");
  const auto desc = options();
  po::variables_map vm;
  const std::string what = usage_error([&] { store_ini(f.path(), read_ini(f.path()), desc, vm); });
  BOOST_TEST(contains(what, "workers"), what);
  BOOST_TEST(contains(what, "line 3"), what);
  BOOST_TEST(contains(what, "line 1"), what);  // where the first one was
}

BOOST_AUTO_TEST_CASE(command_line_overrides_the_file) {
  TempFile f("workers = 2\nhistory = 50\n");
  const auto desc = options();
  const char* argv[] = {"chatd", "--workers=8"};
  po::variables_map vm;
  OptionSources src;
  // As server/main.cpp does: the command line first, then the file fills what is left.
  const auto parsed = po::command_line_parser(2, argv).options(desc).run();
  src.from_command_line(parsed);
  po::store(parsed, vm);
  const auto entries = read_ini(f.path());
  src.from_file(f.path(), entries);
  store_ini(f.path(), entries, desc, vm);
  po::notify(vm);
  BOOST_TEST(vm["workers"].as<long long>() == 8);
  BOOST_TEST(vm["history"].as<long long>() == 50);          // file beats the default
  BOOST_TEST(vm["transport"].as<std::string>() == "cond");  // default where neither says
  BOOST_TEST(src.describe("workers") == "--workers");
  BOOST_TEST(contains(src.describe("history"), "line 2"), src.describe("history"));
  BOOST_TEST(contains(src.describe("history"), "history"));
  BOOST_TEST(src.describe("transport") == "--transport");
}

BOOST_AUTO_TEST_CASE(documented_example_config_loads) {
  // conf/chatd.conf with the keys chatd accepts (server/main.cpp, configurable()).
  const std::string path =
      (std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "conf" /
       "chatd.conf")
          .string();
  po::options_description desc;
  desc.add_options()                                      //
      ("transport", po::value<std::string>(), "")         //
      ("instance", po::value<std::string>(), "")          //
      ("workers", po::value<long long>(), "")             //
      ("history", po::value<long long>(), "")             //
      ("max-clients", po::value<long long>(), "")         //
      ("client-queue-bytes", po::value<long long>(), "")  //
      ("access", po::value<std::string>(), "")            //
      ("runtime-dir", po::value<std::string>(), "")       //
      ("log-level", po::value<std::string>(), "");
  po::variables_map vm;
  BOOST_REQUIRE_NO_THROW(store_ini(path, read_ini(path), desc, vm));
  po::notify(vm);
  BOOST_TEST(vm["transport"].as<std::string>() == "cond");
  BOOST_TEST(vm["client-queue-bytes"].as<long long>() == 1 << 20);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace chat
