#include "common/config.hpp"

#include <fstream>

#include "common/error.hpp"
#include "common/validate.hpp"

namespace chat {
namespace po = boost::program_options;
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

}  // namespace

std::vector<IniEntry> read_ini(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError("cannot read config file " + path);
  return parse_ini(in, path);
}

std::vector<IniEntry> parse_ini(std::istream& in, const std::string& path) {
  std::vector<IniEntry> entries;
  std::string raw;
  for (int line = 1; std::getline(in, raw); ++line) {
    const std::string s = trim(raw);
    if (s.empty() || s[0] == '#' || s[0] == ';') continue;
    if (s.front() == '[' && s.back() == ']') continue;
    const auto eq = s.find('=');
    const std::string where = "config " + path + " line " + std::to_string(line);
    if (eq == std::string::npos) throw UsageError(where + ": expected 'key = value'");
    IniEntry e{trim(s.substr(0, eq)), trim(s.substr(eq + 1)), line};
    if (e.key.empty()) throw UsageError(where + ": missing key before '='");
    entries.push_back(std::move(e));
  }
  if (in.bad()) throw UsageError("error reading config file " + path);
  return entries;
}

std::string describe_option_error(const po::error& e) {
  const auto* named = dynamic_cast<const po::error_with_option_name*>(&e);
  if (named == nullptr) return e.what();  // no substitutions in these messages
  const std::string name = "'" + sanitize_for_terminal(named->get_option_name()) + "'";
  if (dynamic_cast<const po::unknown_option*>(&e)) return "unrecognised option " + name;
  if (dynamic_cast<const po::ambiguous_option*>(&e)) return "ambiguous option " + name;
  if (dynamic_cast<const po::multiple_occurrences*>(&e)) {
    return "option " + name + " given more than once";
  }
  if (dynamic_cast<const po::required_option*>(&e)) return "option " + name + " is required";
  if (dynamic_cast<const po::invalid_command_line_syntax*>(&e)) {
    return "option " + name + " is missing its value or has one it does not take";
  }
  return "invalid value for option " + name;
}

void OptionSources::from_file(const std::string& path, const std::vector<IniEntry>& entries) {
  for (const auto& e : entries) {
    where_.try_emplace(
        e.key, "config " + path + " line " + std::to_string(e.line) + ", key '" + e.key + "'");
  }
}

void OptionSources::from_command_line(const po::parsed_options& parsed) {
  for (const auto& o : parsed.options) where_.insert_or_assign(o.string_key, "--" + o.string_key);
}

std::string OptionSources::describe(const std::string& key) const {
  const auto it = where_.find(key);
  return it == where_.end() ? "--" + key : it->second;
}

void store_ini(const std::string& path, const std::vector<IniEntry>& entries,
               const po::options_description& allowed, po::variables_map& vm) {
  std::map<std::string, int> seen;
  for (const auto& e : entries) {
    const std::string where =
        "config " + path + " line " + std::to_string(e.line) + ", key '" + e.key + "'";
    if (allowed.find_nothrow(e.key, false) == nullptr) {
      throw UsageError(where + ": unknown option");
    }
    if (const auto [it, fresh] = seen.emplace(e.key, e.line); !fresh) {
      throw UsageError(where + ": duplicate of line " + std::to_string(it->second));
    }
    po::parsed_options one(&allowed);
    po::option opt(e.key, {e.value});
    opt.original_tokens = {e.key, e.value};
    one.options.push_back(std::move(opt));
    try {
      po::store(one, vm);
    } catch (const po::error& err) {
      throw UsageError(where + ": " + describe_option_error(err) + " ('" +
                       sanitize_for_terminal(e.value) + "')");
    }
  }
}

}  // namespace chat
