// chat: parses options, connects, and runs the terminal front end (stdin and stdout are
// terminals) or the line front end (anything else, or --jsonl).
#include <unistd.h>

#include <boost/program_options.hpp>
#include <clocale>
#include <iostream>

#include "client/line_client.hpp"
#include "client/session.hpp"
#include "client/terminal_client.hpp"
#include "common/config.hpp"
#include "common/error.hpp"
#include "common/validate.hpp"
#include "transport/factory.hpp"

namespace po = boost::program_options;
using namespace chat::client;
using chat::UniqueFd;

namespace {

struct Parsed {
  SessionOptions session;
  bool jsonl = false;
};

po::options_description options() {
  po::options_description d("Options");
  // clang-format off: one option per line reads better than what the formatter makes of it
  d.add_options()("nick,n", po::value<std::string>(),
                  "your nickname (required): 1-32 of A-Z a-z 0-9 _ - .")(
      "instance", po::value<std::string>()->default_value("default"), "the chatd instance to join")(
      "room", po::value<std::string>()->default_value("lobby"), "the room to start in")(
      "jsonl", "print one JSON object per event (for scripts)")(
      "runtime-dir", po::value<std::string>()->default_value(""),
      "base directory (default $XDG_RUNTIME_DIR/ipchat, else /tmp/ipchat-UID)")(
      "transport", po::value<std::string>(),
      "expected transport; must match the one the server names at its door")(
      "help,h", "show this help and exit")("version", "show the version and exit");
  // clang-format on
  return d;
}

void usage_error(const std::string& message) {
  std::cerr << "chat: " << message << "\nTry 'chat --help'.\n";
  std::exit(kExitUsage);
}

Parsed parse(int argc, char** argv) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(options()).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    usage_error(chat::describe_option_error(e));
  }
  if (vm.count("help")) {
    std::cout
        << "Usage: chat -n NICK [--instance=NAME] [--room=ROOM] [--jsonl] [--runtime-dir=DIR]\n"
           "The ipchat client. On a terminal it is interactive; otherwise every stdin line\n"
           "is one message or /command, and at end of input it delivers everything, waits\n"
           "for the server's echo and exits.\n\n"
        << options()
        << "\nCommands: /join ROOM, /part [ROOM], /msg NICK TEXT, /me TEXT, /nick NEW,\n"
           "/who [ROOM], /whois NICK, /rooms, /quit [REASON], /help; //text sends a\n"
           "literal '/'.\n"
           "\nTo join a server another account runs for several users, name its base\n"
           "directory with --runtime-dir (e.g. /run/ipchat for the system service).\n"
           "\nExit codes: 0 normal end, 1 failure, 2 usage error, 3 no server for the\n"
           "instance, 4 nickname rejected, 5 connection lost (server died or evicted us),\n"
           "6 permission denied (the server's --access does not admit this account).\n";
    std::exit(0);
  }
  if (vm.count("version")) {
    std::cout << "chat (ipchat) " IPCHAT_VERSION "\n";
    std::exit(0);
  }
  Parsed p;
  if (!vm.count("nick")) usage_error("missing -n NICK");
  p.session.nick = vm["nick"].as<std::string>();
  p.session.instance = vm["instance"].as<std::string>();
  p.session.room = vm["room"].as<std::string>();
  p.session.runtime_dir = vm["runtime-dir"].as<std::string>();
  if (vm.count("transport")) {
    p.session.transport = vm["transport"].as<std::string>();
    if (chat::transport::find_backend(p.session.transport) == nullptr) {
      usage_error("--transport: unknown transport '" + p.session.transport + "' (choose one of " +
                  chat::transport::backend_names() + ")");
    }
  }
  if (!chat::is_valid_name(p.session.instance)) usage_error("--instance: invalid instance name");
  if (!chat::is_valid_name(p.session.room))
    usage_error("--room: invalid room name (1-32 of A-Z a-z 0-9 _ - .)");
  p.jsonl = vm.count("jsonl") > 0;
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  chat::transport::prepare_process();
  const Parsed p = parse(argc, argv);
  if (!chat::is_valid_name(p.session.nick)) {
    std::cerr << "chat: bad_nick: invalid nickname '" << chat::sanitize_for_terminal(p.session.nick)
              << "' (1-32 of A-Z a-z 0-9 _ - .)\n";
    return kExitNickRejected;
  }
  const bool interactive = !p.jsonl && ::isatty(0) && ::isatty(1);
  try {
    UniqueFd signals;
    if (interactive) {
      // Readline edits UTF-8 text as characters only under the user's locale.
      std::setlocale(LC_ALL, "");
      // Before ChatSession::open, which may start threads: they must inherit the mask.
      signals = take_terminal_signals();
    }
    auto session = ChatSession::open(p.session);
    if (interactive) {
      RenderContext render;
      render.transport = session->transport();
      render.instance = session->instance();
      render.color = true;
      return run_terminal_client(*session, render, std::move(signals));
    }
    LineOptions lo;
    lo.jsonl = p.jsonl;
    lo.render.transport = session->transport();
    lo.render.instance = session->instance();
    lo.render.color = !p.jsonl && ::isatty(1);
    return run_line_client(*session, lo);
  } catch (const SessionError& e) {
    std::cerr << "chat: " << e.what() << "\n";
    return e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "chat: " << e.what() << "\n";
    return kExitFailure;
  }
}
