// Validation of nicks, room names and message text (DESIGN.md "Names and limits").
#pragma once

#include <string>
#include <string_view>

namespace chat {

// True for 1-32 bytes of A-Z a-z 0-9 _ - . (nick and room names).
bool is_valid_name(std::string_view name);

// The case-folded form under which names are unique ("Alice" and "alice" collide).
std::string fold_name(std::string_view name);

enum class TextError { kNone, kEmpty, kTooLong, kBadUtf8, kControl };

// Checks a message text: 1-4000 bytes of valid UTF-8 (no overlongs, surrogates or values
// past U+10FFFF) without control characters (C0, DEL, C1) other than tab.
TextError check_text(std::string_view text);

// The `error` event code for a TextError ("bad_text" or "too_long"); empty for kNone.
std::string_view text_error_code(TextError e);
// A human sentence for a TextError.
std::string_view text_error_message(TextError e);

// True if `s` is well-formed UTF-8 (any code points, controls allowed).
bool is_valid_utf8(std::string_view s);

// Returns `s` with every control character and invalid UTF-8 byte replaced by a visible
// stand-in (U+FFFD or the ^X caret form), so it is harmless to print on a terminal.
std::string sanitize_for_terminal(std::string_view s);

}  // namespace chat
