#include "common/validate.hpp"

#include <cstdint>

#include "common/limits.hpp"

namespace chat {
namespace {

bool is_name_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.';
}

// Decodes one UTF-8 sequence at s[i]; returns its length and stores the code point, or 0 if
// the bytes there are not a well-formed sequence.
std::size_t decode_utf8(std::string_view s, std::size_t i, char32_t& cp) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  std::size_t len;
  char32_t min;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() - i < len) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

bool is_control(char32_t cp) {
  return cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F);
}

}  // namespace

bool is_valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (char c : name) {
    if (!is_name_char(c)) return false;
  }
  return true;
}

std::string fold_name(std::string_view name) {
  std::string out(name);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool is_valid_utf8(std::string_view s) {
  char32_t cp;
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = decode_utf8(s, i, cp);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

TextError check_text(std::string_view text) {
  if (text.empty()) return TextError::kEmpty;
  if (text.size() > kMaxTextBytes) return TextError::kTooLong;
  char32_t cp;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = decode_utf8(text, i, cp);
    if (n == 0) return TextError::kBadUtf8;
    if (cp != '\t' && is_control(cp)) return TextError::kControl;
    i += n;
  }
  return TextError::kNone;
}

std::string_view text_error_code(TextError e) {
  switch (e) {
    case TextError::kNone:
      return "";
    case TextError::kTooLong:
      return "too_long";
    case TextError::kEmpty:
    case TextError::kBadUtf8:
    case TextError::kControl:
      return "bad_text";
  }
  return "bad_text";
}

std::string_view text_error_message(TextError e) {
  switch (e) {
    case TextError::kNone:
      return "";
    case TextError::kEmpty:
      return "empty message";
    case TextError::kTooLong:
      return "message longer than 4000 bytes";
    case TextError::kBadUtf8:
      return "message is not valid UTF-8";
    case TextError::kControl:
      return "message contains control characters";
  }
  return "bad message";
}

std::string sanitize_for_terminal(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  char32_t cp;
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = decode_utf8(s, i, cp);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
      continue;
    }
    if (cp == '\t') {
      out += ' ';
    } else if (cp < 0x20 || cp == 0x7F) {
      out += '^';
      out += static_cast<char>(cp == 0x7F ? '?' : cp + '@');
    } else if (is_control(cp)) {
      out += "\xEF\xBF\xBD";
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  return out;
}

}  // namespace chat
