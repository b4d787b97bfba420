#include "common/access.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "common/error.hpp"
#include "common/validate.hpp"

namespace chat {
namespace {

constexpr uid_t kFirstHumanUid = 1000;
constexpr uid_t kNobodyUid = 65534;

std::vector<char> nss_buffer() {
  const long hint = std::max(::sysconf(_SC_GETPW_R_SIZE_MAX), ::sysconf(_SC_GETGR_R_SIZE_MAX));
  return std::vector<char>(hint > 0 ? static_cast<std::size_t>(hint) : 16384);
}

std::optional<gid_t> group_named(const std::string& name) {
  std::vector<char> buf = nss_buffer();
  group g{};
  group* found = nullptr;
  while (::getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found) == ERANGE) {
    buf.resize(buf.size() * 2);
  }
  if (found == nullptr) return std::nullopt;
  return found->gr_gid;
}

std::optional<passwd> user_named(const std::string& name, std::vector<char>& buf) {
  passwd pw{};
  passwd* found = nullptr;
  while (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) == ERANGE) {
    buf.resize(buf.size() * 2);
  }
  if (found == nullptr) return std::nullopt;
  return pw;
}

}  // namespace

AccessPolicy AccessPolicy::parse(std::string_view text) {
  AccessPolicy p;
  if (text == "user") return p;
  if (text == "all") {
    p.kind_ = Kind::kAll;
    return p;
  }
  constexpr std::string_view kGroupPrefix = "group:";
  if (text.substr(0, kGroupPrefix.size()) == kGroupPrefix) {
    p.kind_ = Kind::kGroup;
    p.group_name_ = std::string(text.substr(kGroupPrefix.size()));
    if (p.group_name_.empty()) throw UsageError("group: needs a group name");
    const auto gid = group_named(p.group_name_);
    if (!gid) throw UsageError("there is no group '" + p.group_name_ + "' on this host");
    p.group_ = *gid;
    return p;
  }
  throw UsageError("'" + std::string(text) + "' is not one of user, group:NAME, all");
}

bool AccessPolicy::admits(const Peer& peer, uid_t server_uid) const {
  if (peer.uid == server_uid) return true;
  switch (kind_) {
    case Kind::kUser:
      return false;
    case Kind::kAll:
      return true;
    case Kind::kGroup:
      return peer.gid == group_ ||
             std::find(peer.groups.begin(), peer.groups.end(), group_) != peer.groups.end();
  }
  return false;
}

std::string AccessPolicy::spelling() const {
  switch (kind_) {
    case Kind::kUser:
      return "user";
    case Kind::kAll:
      return "all";
    case Kind::kGroup:
      return "group:" + group_name_;
  }
  return "user";
}

std::string AccessPolicy::describe(uid_t server_uid) const {
  switch (kind_) {
    case Kind::kUser:
      return "only the account " + account_name(server_uid);
    case Kind::kAll:
      return "every local account";
    case Kind::kGroup:
      return "the account " + account_name(server_uid) + " and members of group " + group_name_;
  }
  return {};
}

mode_t AccessPolicy::dir_mode() const {
  switch (kind_) {
    case Kind::kUser:
      return 0700;
    case Kind::kGroup:
      return 0710;
    case Kind::kAll:
      return 0711;
  }
  return 0700;
}

mode_t AccessPolicy::door_mode() const {
  switch (kind_) {
    case Kind::kUser:
      return 0600;
    case Kind::kGroup:
      return 0620;
    case Kind::kAll:
      return 0622;
  }
  return 0600;
}

std::string account_name(uid_t uid) {
  std::vector<char> buf = nss_buffer();
  passwd pw{};
  passwd* found = nullptr;
  while (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == ERANGE) {
    buf.resize(buf.size() * 2);
  }
  if (found == nullptr || found->pw_name == nullptr || found->pw_name[0] == '\0') {
    return std::to_string(uid);
  }
  return found->pw_name;
}

std::optional<uid_t> human_account_named(std::string_view name) {
  std::vector<char> buf = nss_buffer();
  // Login names are conventionally lower case; nicks compare case-insensitively.
  for (const std::string& candidate : {std::string(name), fold_name(name)}) {
    const auto pw = user_named(candidate, buf);
    if (pw && pw->pw_uid >= kFirstHumanUid && pw->pw_uid != kNobodyUid) return pw->pw_uid;
  }
  return std::nullopt;
}

}  // namespace chat
