#include "gateway/access_log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

namespace flotilla::gateway {
namespace {

std::filesystem::path scratch(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("flotilla-access-log-" + std::to_string(::getpid()) + "-" + name);
  std::filesystem::remove_all(dir);
  return dir;
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(AccessLog, AMissingDirectoryIsMadeAndLinesReachTheFile) {
  auto dir = scratch("missing");
  auto file = dir / "logs" / "gateway" / "access.jsonl";
  {
    AccessLog log(file.string());
    log.write({"127.0.0.1", "GET", "shop.test", "/a?b=\"c\"", 200, 12, 1500000, "127.0.0.1:9000", 1, "web", "abc", {}});
    log.write({"127.0.0.1", "GET", "shop.test", "/cut", 200, 5, 1500000, "127.0.0.1:9000", 1, "web", "abd",
               "service closed"});
  }  // the writer flushes on destruction
  auto text = slurp(file);
  EXPECT_NE(text.find("\"path\":\"/a?b=\\\"c\\\"\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"status\":200"), std::string::npos) << text;
  EXPECT_NE(text.find(",\"bytes\":12,\"duration\":0.001500,"), std::string::npos) << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(^\{"time":"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",)"))) << text;
  EXPECT_EQ(text.back(), '\n');
  // "cut" only on the line of an answer cut short, last.
  auto first = text.substr(0, text.find('\n'));
  EXPECT_EQ(first.find("\"cut\""), std::string::npos) << first;
  EXPECT_NE(text.find("\"request_id\":\"abd\",\"cut\":\"service closed\"}\n"), std::string::npos) << text;
  std::filesystem::remove_all(dir);
}

TEST(AccessLog, APathThatCannotBeOpenedSaysWhy) {
  auto dir = scratch("blocked");
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "file") << "x";  // a file where a directory should be
  try {
    AccessLog log((dir / "file" / "access.jsonl").string());
    ADD_FAILURE() << "opened a log under a file";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open access log"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Not a directory"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(AccessLog, StringsAreEscapedIntoValidJson) {
  auto json = [](std::string_view s) {
    std::string out;
    append_json_string(out, s);
    return out;
  };
  EXPECT_EQ(json(""), "\"\"");
  EXPECT_EQ(json("/plain/path?a=1"), "\"/plain/path?a=1\"");
  EXPECT_EQ(json("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(json(std::string_view("x\0y\r\n\x7f\xc3\xa9z", 9)), "\"x\\u0000y\\u000d\\u000a\\u007f\\u00c3\\u00a9z\"");
  EXPECT_EQ(json("\x1f"), "\"\\u001f\"");
  EXPECT_EQ(json("\""), "\"\\\"\"");
}

}  // namespace
}  // namespace flotilla::gateway
