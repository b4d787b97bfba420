// INI configuration files merged into Boost.Program_options, with errors that name the key
// and the line.
#pragma once

#include <boost/program_options.hpp>
#include <istream>
#include <map>
#include <string>
#include <vector>

namespace chat {

struct IniEntry {
  std::string key;
  std::string value;
  int line = 0;
};

// Reads `key = value` lines; blank lines and lines starting with '#' or ';' are ignored, as
// is a `[section]` header. Throws UsageError naming file and line on anything else, and if
// the file cannot be read.
std::vector<IniEntry> read_ini(const std::string& path);
// The same for text already open; `name` stands for the file in messages.
std::vector<IniEntry> parse_ini(std::istream& in, const std::string& name);

// A message for a Boost.Program_options error that names the option. Never calls what() on
// errors that carry an option name or value: Boost 1.81 substitutes the user's text into its
// message template and loops forever on text like "%value%" (found by fuzzing).
std::string describe_option_error(const boost::program_options::error& e);

// Remembers where each option came from so later checks can name it the way the user wrote
// it: "--workers" or "config chatd.conf line 4, key 'workers'".
class OptionSources {
 public:
  void from_file(const std::string& path, const std::vector<IniEntry>& entries);
  void from_command_line(const boost::program_options::parsed_options& parsed);
  std::string describe(const std::string& key) const;

 private:
  std::map<std::string, std::string> where_;
};

// Stores `entries` into `vm` without overriding values already there (the command line wins).
// Every key must be an option of `allowed`; an unknown key or a value that does not parse
// throws UsageError naming the file, line and key.
void store_ini(const std::string& path, const std::vector<IniEntry>& entries,
               const boost::program_options::options_description& allowed,
               boost::program_options::variables_map& vm);

}  // namespace chat
