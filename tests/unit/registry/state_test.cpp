#include "registry/state.h"

#include <gtest/gtest.h>

using namespace flotilla;
using namespace flotilla::registry;
using flotilla::store::Event;
using flotilla::store::KeyValue;

namespace {
Event put(const std::string& key, const std::string& value, uint64_t rev) {
  return Event{Event::Type::put, KeyValue{key, value, rev, rev, 1, 0}};
}
Event del(const std::string& key, uint64_t rev) { return Event{Event::Type::del, KeyValue{key, {}, 0, rev, 0, 0}}; }

std::string service(const std::string& id, const std::string& name) {
  Service s;
  s.id = id;
  s.name = name;
  return encode(s);
}
std::string check(const std::string& id, const std::string& service_id, const std::string& service_name,
                  const std::string& status) {
  Check c;
  c.id = id;
  c.service_id = service_id;
  c.service_name = service_name;
  c.status = status;
  c.kind = "ttl";
  return encode(c);
}
}  // namespace

TEST(State, TopicsAreOnlyThoseTouched) {
  State st;
  st.load({});
  auto c1 = st.apply(1, {put("svc/web-1", service("web-1", "web"), 1)});
  EXPECT_TRUE(c1.topics.count("svc:web"));
  EXPECT_TRUE(c1.topics.count("catalog"));
  auto c2 = st.apply(2, {put("chk/c1", check("c1", "web-1", "web", "passing"), 2)});
  EXPECT_TRUE(c2.topics.count("svc:web"));
  EXPECT_FALSE(c2.topics.count("svc:api"));
  EXPECT_FALSE(c2.topics.count("catalog"));
  EXPECT_EQ(st.topic_index("svc:web"), 2u);
  st.apply(3, {put("svc/api-1", service("api-1", "api"), 3)});
  EXPECT_EQ(st.topic_index("svc:web"), 2u) << "another service's change leaves web's index alone";
  EXPECT_EQ(st.instances("web").size(), 1u);
  EXPECT_EQ(st.checks_of_service("web-1").size(), 1u);
  st.apply(4, {del("svc/web-1", 4), del("chk/c1", 4)});
  EXPECT_TRUE(st.instances("web").empty());
  EXPECT_TRUE(st.checks_of_service("web-1").empty());
  EXPECT_EQ(st.topic_index("svc:web"), 4u);
}

TEST(State, KvIndexSeesDeletions) {
  State st;
  st.load({});
  KvEntry e;
  e.value = "x";
  st.apply(5, {put("kv/app/a", encode(e), 5), put("kv/app/b", encode(e), 5), put("kv/other", encode(e), 5)});
  st.apply(6, {put("kv/other", encode(e), 6)});
  EXPECT_EQ(st.kv_index("app/", true), 5u);
  st.apply(7, {del("kv/app/b", 7)});
  EXPECT_EQ(st.kv_index("app/", true), 7u) << "a deletion under the prefix moves its index";
  EXPECT_EQ(st.kv_index("app/b", false), 7u);
  EXPECT_EQ(st.kv_index("app/a", false), 5u);
}

TEST(State, RestartStartsIndexesAtTheSnapshot) {
  State st;
  store::Snapshot snap;
  snap.revision = 40;
  snap.kvs.push_back(KeyValue{"svc/web-1", service("web-1", "web"), 3, 3, 1, 0});
  st.load(snap);
  EXPECT_EQ(st.topic_index("svc:web"), 40u);
  EXPECT_EQ(st.topic_index("svc:never"), 40u);
  EXPECT_EQ(st.kv_index("anything", true), 40u);
  EXPECT_EQ(st.service("web-1")->create_index, 3u);
}
