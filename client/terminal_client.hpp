// The interactive front end of `chat` on a terminal: GNU readline edits the input line at the
// bottom; events print above it as they arrive, without disturbing what is being typed.
#pragma once

#include "client/render.hpp"
#include "client/session.hpp"
#include "common/unique_fd.hpp"

namespace chat::client {

// Blocks the signals the terminal client handles itself (SIGINT, SIGTERM, SIGHUP, SIGTSTP,
// SIGWINCH) in the calling thread and returns a signalfd that reports them. Call from main()
// before anything starts a thread (ChatSession::open may), so every thread inherits the mask
// and no signal can interrupt the process while readline has the terminal in raw mode.
// Throws std::system_error on failure.
UniqueFd take_terminal_signals();

// Runs the interactive client on stdin and stdout, which must both be terminals, with
// `signals` from take_terminal_signals(). Returns kExitOk after /quit, Ctrl+D on an empty
// line, Ctrl+C, SIGTERM or SIGHUP (each sends the server a Quit first), or
// kExitConnectionLost with a message on stderr if the server goes away. The terminal is
// restored on every path, exceptions included. Call once, from the main thread.
int run_terminal_client(ChatSession& session, const RenderContext& render, UniqueFd signals);

}  // namespace chat::client
