// The line front end of `chat`: stdin lines in, events out (text or JSON lines).
#pragma once

#include "client/render.hpp"
#include "client/session.hpp"

namespace chat::client {

struct LineOptions {
  bool jsonl = false;
  RenderContext render;
};

// Reads stdin until end of input or /quit, sending each line; prints every event as it
// arrives, one whole line at a time. At end of input it waits until the server has handled
// everything it sent, says goodbye and returns kExitOk; returns kExitConnectionLost if the
// server goes away first.
int run_line_client(ChatSession& session, const LineOptions& options);

}  // namespace chat::client
