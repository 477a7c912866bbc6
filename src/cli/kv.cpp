// `flotilla kv get|put|delete|list`: the registry's key/value store from the shell.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>
#include <iterator>

#include "cli/api_client.h"
#include "cli/commands.h"
#include "cli/target.h"
#include "common/base64.h"

namespace flotilla::cli {

namespace {
struct KvOptions {
  Target target;
  std::string key;
  std::string value;
  bool recurse = false;
  std::optional<uint64_t> cas;
  bool from_stdin = false;
};

int fail(const std::string& what) {
  std::cerr << "flotilla kv: " << what << "\n";
  return 1;
}
}  // namespace

std::function<int()> add_kv(CLI::App& app) {
  auto o = std::make_shared<KvOptions>();
  auto* kv = app.add_subcommand("kv", "Read and write the registry's key/value store");
  kv->require_subcommand(1);
  add_target_options(kv, o->target);
  auto* get = kv->add_subcommand("get", "Print a key's value (exit 1 when missing)");
  get->add_option("key", o->key, "Key")->required();
  auto* put = kv->add_subcommand("put", "Set a key (value from the argument, or stdin with -)");
  put->add_option("key", o->key, "Key")->required();
  put->add_option("value", o->value, "Value, or - to read stdin")->required();
  put->add_option("--cas", o->cas, "Only if the key's ModifyIndex is this (0: only if absent)");
  auto* del = kv->add_subcommand("delete", "Delete a key (or every key under a prefix with --recurse)");
  del->add_option("key", o->key, "Key or prefix");
  del->add_flag("--recurse", o->recurse, "Delete every key under the prefix");
  auto* list = kv->add_subcommand("list", "List keys under a prefix");
  list->add_option("prefix", o->key, "Prefix (default: everything)");

  // `flotilla kv get KEY --api X` as well as `flotilla kv --api X get KEY` (and -f, --token).
  for (auto* sub : {get, put, del, list}) sub->fallthrough();

  return [o, get, put, del, list]() -> int {
    try {
      ApiClient client = make_client(o->target);
      std::string path = "/v1/kv/" + url_encode_path(o->key);
      if (get->parsed()) {
        auto r = client.request("GET", path + "?raw");
        if (r.status == 404) return fail("no key \"" + o->key + "\"");
        if (r.status != 200) return fail(error_message(r));
        std::cout << r.body;
        if (!r.body.empty() && r.body.back() != '\n') std::cout << "\n";
        return 0;
      }
      if (put->parsed()) {
        std::string value = o->value;
        if (value == "-") value.assign(std::istreambuf_iterator<char>(std::cin), {});
        std::string q = o->cas ? "?cas=" + std::to_string(*o->cas) : "";
        auto r = client.request("PUT", path + q, value);
        if (r.status != 200) return fail(error_message(r));
        if (r.body != "true")
          return fail(*o->cas == 0 ? "not written: the key already exists (--cas 0 writes only a new key)"
                                   : "not written: the key changed since ModifyIndex " + std::to_string(*o->cas));
        return 0;
      }
      if (del->parsed()) {
        if (o->key.empty())
          return fail(o->recurse ? "give a prefix: the CLI does not delete every key at once"
                                 : "give a key, or a prefix and --recurse");
        auto r = client.request("DELETE", path + (o->recurse ? "?recurse" : ""));
        if (r.status != 200) return fail(error_message(r));
        return 0;
      }
      if (list->parsed()) {
        auto r = client.request("GET", path + "?recurse");
        if (r.status == 404) return 0;
        if (r.status != 200) return fail(error_message(r));
        for (const auto& e : nlohmann::json::parse(r.body)) {
          std::cout << e["Key"].get<std::string>() << "\t" << e["ModifyIndex"].get<uint64_t>();
          if (e.contains("Session")) std::cout << "\tlocked by " << e["Session"].get<std::string>();
          std::cout << "\n";
        }
        return 0;
      }
    } catch (const UsageError& e) {
      fail(e.what());
      return 2;
    } catch (const std::exception& e) {
      return fail(e.what());
    }
    return 2;
  };
}

}  // namespace flotilla::cli
