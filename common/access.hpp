// Who may connect to a chatd (`--access`), and who a connecting process is as the kernel
// reports it. The security boundary of ipchat is the Unix account: processes of one account can
// always reach each other (ptrace, kill), so the server trusts an account, never what a process
// says about itself.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace chat {

// A connecting process, from SO_PEERCRED / SO_PEERGROUPS (never from the client's own words).
struct Peer {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups
};

class AccessPolicy {
 public:
  enum class Kind { kUser, kGroup, kAll };

  // `user` (the default): only the server's own account.
  AccessPolicy() = default;
  // Parses `user`, `group:NAME` or `all`; throws UsageError with the reason (unknown word, no
  // such group); the caller names where the text came from.
  static AccessPolicy parse(std::string_view text);

  Kind kind() const { return kind_; }
  gid_t group() const { return group_; }
  const std::string& group_name() const { return group_name_; }

  // True if `peer` may connect to a server running as `server_uid`.
  bool admits(const Peer& peer, uid_t server_uid) const;

  // The option's own spelling: "user", "group:staff", "all".
  std::string spelling() const;
  // Who may connect, in words: "only the account alice", "the account alice and members of
  // group staff", "every local account".
  std::string describe(uid_t server_uid) const;

  // Modes for the instance dir and the door socket: the least that lets the admitted accounts
  // reach the door (search permission on the dir; write permission on the socket, which is
  // what connect(2) checks). Nothing else in the dir is opened by other accounts.
  mode_t dir_mode() const;
  mode_t door_mode() const;

 private:
  Kind kind_ = Kind::kUser;
  gid_t group_ = 0;
  std::string group_name_;
};

// The login name of `uid`, or the uid in decimal when the account has no name.
std::string account_name(uid_t uid);

// The uid of the human account (uid >= 1000, not `nobody`) whose login name is `name` compared
// case-insensitively as nicks are, if there is one.
std::optional<uid_t> human_account_named(std::string_view name);

}  // namespace chat
