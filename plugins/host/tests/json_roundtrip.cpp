// Test driver for the JSON reader: parse the file named by argv[1] and print it back as JSON
// (numbers with 17 significant digits, integers as integers, strings re-escaped, each object key
// once with the value find() gives it), so a test can check json.loads(output) == json.loads(input).
// A parse error prints "error: ..." and exits 1.
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "json.h"

namespace json = vmddpm::host::json;

namespace {

void print_string(const std::string& text) {
  std::putchar('"');
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      std::printf("\\%c", c);
    } else if (byte < 0x20) {
      std::printf("\\u%04x", byte);
    } else {
      std::putchar(c);  // UTF-8 passes through
    }
  }
  std::putchar('"');
}

void print(const json::Value& value) {
  switch (value.type()) {
    case json::Value::Type::kNull: std::printf("null"); break;
    case json::Value::Type::kBool: std::printf(value.as_bool() ? "true" : "false"); break;
    case json::Value::Type::kNumber: {
      bool integral = true;
      try {
        std::printf("%lld", static_cast<long long>(value.as_int()));
      } catch (const json::TypeError&) {
        integral = false;
      }
      if (!integral) std::printf("%.17g", value.as_double());
      break;
    }
    case json::Value::Type::kString: print_string(value.as_string()); break;
    case json::Value::Type::kArray: {
      std::putchar('[');
      bool first = true;
      for (const auto& item : value.items()) {
        if (!first) std::putchar(',');
        first = false;
        print(item);
      }
      std::putchar(']');
      break;
    }
    case json::Value::Type::kObject: {
      // Each key once, with the value find() gives it (the last of repeated keys).
      std::putchar('{');
      std::set<std::string> printed;
      for (const auto& member : value.members()) {
        const std::string& key = member.first;
        if (!printed.insert(key).second) continue;
        if (printed.size() > 1) std::putchar(',');
        print_string(key);
        std::putchar(':');
        print(*value.find(key));
      }
      std::putchar('}');
      break;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: json_roundtrip FILE\n");
    return 2;
  }
  std::ifstream file(argv[1], std::ios::binary);
  std::ostringstream text;
  text << file.rdbuf();
  try {
    print(json::parse(text.str()));
    std::putchar('\n');
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
  return 0;
}
